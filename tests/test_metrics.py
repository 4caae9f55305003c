"""benchmark.metrics: binary metrics against scikit-learn and by hand; the metrics.csv frame."""
import math

import benchmark  # noqa: F401  (torchvision shim)
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from benchmark.evaluation.metrics import binary_metrics, compute_metrics, headline_rows, metrics_json

COLUMNS = ["protocol", "method", "seed", "train_set", "test_set", "subset", "quality",
           "perturbation", "severity", "level", "auc", "ap", "eer", "acc", "auc_ci_low",
           "auc_ci_high", "n_real", "n_fake"]


def pair_auc(labels, scores):
    """AUC by counting (fake, real) pairs: fake above real = 1, tie = 1/2."""
    fakes = [s for y, s in zip(labels, scores) if y == 1]
    reals = [s for y, s in zip(labels, scores) if y == 0]
    wins = sum(1.0 if f > r else 0.5 if f == r else 0.0 for f in fakes for r in reals)
    return wins / (len(fakes) * len(reals))


def test_binary_metrics_match_sklearn():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 300)
    s = np.clip(0.3 * y + rng.random(300) * 0.8, 0, 1)
    m = binary_metrics(y, s)
    assert m["auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["ap"] == pytest.approx(average_precision_score(y, s))
    assert m["acc"] == pytest.approx(np.mean((s >= 0.5) == y))
    assert m["auc"] == pytest.approx(pair_auc(y, s))
    # at the EER threshold FPR and FNR meet: brute force over thresholds brackets it
    fpr = np.array([np.mean(s[y == 0] >= t) for t in np.sort(s)])
    fnr = np.array([np.mean(s[y == 1] < t) for t in np.sort(s)])
    i = np.argmin(np.abs(fpr - fnr))
    assert abs(m["eer"] - (fpr[i] + fnr[i]) / 2) < 0.02


def test_auc_by_hand():
    labels, scores = [0, 1, 0, 1], [0.2, 0.7, 0.8, 0.9]
    # pairs (fake, real): 0.7>0.2 yes, 0.7>0.8 no, 0.9>0.2 yes, 0.9>0.8 yes -> 3/4
    assert pair_auc(labels, scores) == 0.75
    assert binary_metrics(labels, scores)["auc"] == pytest.approx(0.75)
    # at 0.5: real 0.2 right, fake 0.7 right, real 0.8 wrong, fake 0.9 right
    assert binary_metrics(labels, scores)["acc"] == pytest.approx(0.75)


def test_eer_by_hand():
    # reals 0.3, 0.5; fakes 0.5, 0.9. ROC: (FPR, FNR) = (0, 1) -> (0, .5) at t=0.9 -> (.5, 0)
    # at t=0.5 (tie). On that last segment FPR = FNR at its middle: 0.25.
    assert binary_metrics([0, 0, 1, 1], [0.3, 0.5, 0.5, 0.9])["eer"] == pytest.approx(0.25)
    # a threshold between 0.5 and 0.6 gives FPR = 1/3 (the 0.6 real) while FNR jumps 1 -> 0
    assert binary_metrics([0, 0, 0, 1], [0.1, 0.2, 0.6, 0.5])["eer"] == pytest.approx(1 / 3)
    assert binary_metrics([0, 1], [0.2, 0.8])["eer"] == 0.0
    assert binary_metrics([0, 1], [0.8, 0.2])["eer"] == 1.0


def test_one_class_and_empty_give_nan():
    m = binary_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert math.isnan(m["auc"]) and math.isnan(m["ap"]) and math.isnan(m["eer"])
    assert m["acc"] == pytest.approx(2 / 3)
    assert all(math.isnan(v) for v in binary_metrics([], []).values())


# video -> (manipulation, frame scores) of the hand-checked condition (baseline, c23, severity 0)
HAND = {"real/000": ("real", [0.2, 0.4]), "real/001": ("real", [0.6, 0.8]),
        "DF/002_003": ("DF", [0.1, 0.9]), "DF/004_005": ("DF", [0.9, 0.7]),
        "F2F/002_003": ("F2F", [0.3, 0.95])}


def scores_frame():
    rng = np.random.default_rng(0)
    rows = []
    for method in ["baseline", "dpl"]:
        for test_set in ["c23", "c40"]:
            for severity in range(4):
                hand = (method, test_set, severity) == ("baseline", "c23", 0)
                for vid, (manip, frames) in HAND.items():
                    for f, s in enumerate(frames):
                        rows.append(dict(
                            protocol="cross_quality", method=method, seed=0, train_set="ff_c23",
                            test_set=test_set, quality=test_set, video_id=vid, frame_idx=f,
                            label=int(manip != "real"), manipulation=manip,
                            perturbation="random_jpeg", severity=severity,
                            jpeg_quality=[100, 50, 20, 10][severity],
                            score=s if hand else float(rng.random())))
    return pd.DataFrame(rows)


def test_compute_metrics_schema_and_rows():
    m = compute_metrics(scores_frame())
    assert list(m.columns) == COLUMNS
    # 2 methods x 2 test sets x 2 levels x 3 subsets x (4 conditions + 1 headline)
    assert len(m) == 2 * 2 * 2 * 3 * 5
    assert set(m["subset"]) == {"DF", "F2F", "all"}  # FS/NT absent among the fakes
    assert m["auc_ci_low"].isna().all() and m["auc_ci_high"].isna().all()
    assert m.equals(compute_metrics(scores_frame().sample(frac=1, random_state=1)))


def _row(m, **kw):
    sel = m
    for k, v in kw.items():
        sel = sel[sel[k].isna()] if v is None else sel[sel[k] == v]
    assert len(sel) == 1, kw
    return sel.iloc[0]


def test_frame_and_video_level_by_hand():
    m = compute_metrics(scores_frame())
    at = dict(method="baseline", test_set="c23", severity=0, subset="DF")
    frame = _row(m, level="frame", **at)
    # fakes .1 .9 .9 .7 vs reals .2 .4 .6 .8: 0 + 4 + 4 + 3 = 11 of 16 pairs
    assert frame["auc"] == pytest.approx(11 / 16)
    assert (frame["n_real"], frame["n_fake"]) == (4, 4)
    video = _row(m, level="video", **at)
    # video means: fakes .5 .8 vs reals .3 .7: .5>.3, .8>.3, .8>.7 -> 3 of 4 pairs
    assert video["auc"] == pytest.approx(0.75)
    assert (video["n_real"], video["n_fake"]) == (2, 2)
    allv = _row(m, level="video", method="baseline", test_set="c23", severity=0, subset="all")
    assert (allv["n_real"], allv["n_fake"]) == (2, 3)


def test_headline_is_mean_over_severities():
    m = compute_metrics(scores_frame())
    at = dict(method="dpl", test_set="c40", subset="F2F", level="frame")
    head = _row(m, severity=None, **at)
    conds = m[(m["method"] == "dpl") & (m["test_set"] == "c40") & (m["subset"] == "F2F")
              & (m["level"] == "frame") & m["severity"].notna()]
    assert sorted(conds["severity"]) == [0, 1, 2, 3]
    for v in ["auc", "ap", "eer", "acc"]:
        assert head[v] == pytest.approx(conds[v].mean())
    assert (head["n_real"], head["n_fake"]) == (4, 2)
    assert len(headline_rows(m)) == 2 * 2 * 2 * 3
    assert headline_rows(m)["severity"].isna().all()


def test_one_class_subset_gives_nan_and_no_headline_for_single_condition():
    df = scores_frame()
    df = df[(df["label"] == 1) & (df["severity"] == 0)].assign(severity=np.nan,
                                                               perturbation=None)
    m = compute_metrics(df)
    assert m["auc"].isna().all() and m["eer"].isna().all()
    assert (m["n_real"] == 0).all()
    assert len(headline_rows(m)) == len(m)  # a single condition stands for itself
    assert m["severity"].isna().all()


def test_metrics_json_nesting():
    m = compute_metrics(scores_frame())
    j = metrics_json(m)
    assert set(j) == {"cross_quality"}
    assert set(j["cross_quality"]) == {"baseline", "dpl"}
    leaf = j["cross_quality"]["dpl"]["c40"]["frame"]
    assert set(leaf) == {"DF", "F2F", "all"}
    head = _row(m, method="dpl", test_set="c40", subset="F2F", level="frame", severity=None)
    assert leaf["F2F"] == pytest.approx(head["auc"], abs=1e-6)
