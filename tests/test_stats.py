"""benchmark.stats / compare and the CI columns of metrics: DeLong by hand, bootstrap by videos."""
import math

import benchmark  # noqa: F401  (torchvision shim)
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from benchmark.evaluation import compare, stats
from benchmark.evaluation.metrics import compute_metrics, headline_rows

# Worked DeLong example (hand computation, DeLong et al. 1988):
#   positives (fake) scores A: 0.9 0.6 0.4    B: 0.8 0.3 0.7
#   negatives (real) scores A: 0.5 0.2        B: 0.3 0.1
# A: V10 = [1, 1, 1/2], V01 = [2/3, 1], AUC = 5/6.  B (0.3 ties 0.3 -> 1/2): V10 = [1, 3/4, 1],
# V01 = [5/6, 1], AUC = 11/12.  S10: var_A 1/12, var_B 1/48, cov -1/48 -> var(V10_A - V10_B)
# = 1/12 + 1/48 + 2/48 = 7/48, / m=3 = 7/144.  S01: var_A 1/18, var_B 1/72, cov 1/36 ->
# 1/18 + 1/72 - 2/36 = 1/72, / n=2 = 1/144.  var(diff) = 8/144 = 1/18; diff = -1/12;
# z = -(1/12) * sqrt(18) = -0.353553; p = erfc(0.353553 / sqrt 2) = erfc(0.25) = 0.723674.
LABELS = [1, 1, 1, 0, 0]
A = [0.9, 0.6, 0.4, 0.5, 0.2]
B = [0.8, 0.3, 0.7, 0.3, 0.1]


def test_delong_worked_example():
    auc_a, v10a, v01a = stats.delong_components(LABELS, A)
    auc_b, v10b, v01b = stats.delong_components(LABELS, B)
    assert auc_a == pytest.approx(5 / 6) and auc_b == pytest.approx(11 / 12)
    np.testing.assert_allclose(v10a, [1, 1, 0.5]); np.testing.assert_allclose(v01a, [2 / 3, 1])
    np.testing.assert_allclose(v10b, [1, 0.75, 1]); np.testing.assert_allclose(v01b, [5 / 6, 1])
    t = stats.delong_paired((auc_a, v10a, v01a), (auc_b, v10b, v01b))
    assert t["var"] == pytest.approx(1 / 18)
    assert t["diff"] == pytest.approx(-1 / 12)
    assert t["z"] == pytest.approx(-math.sqrt(18) / 12)
    assert t["p_value"] == pytest.approx(0.7236736, abs=1e-6)


def test_delong_auc_matches_sklearn_and_identical_scores_give_p1():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) + 0.3 * y, 2)  # rounded: ties present
    auc, _, _ = stats.delong_components(y, s)
    assert auc == pytest.approx(roc_auc_score(y, s))
    c = stats.delong_components(y, s)
    assert stats.delong_paired(c, c)["p_value"] == 1.0


def test_weighted_auc_equals_sklearn_on_repeated_samples():
    rng = np.random.default_rng(2)
    y = np.r_[np.zeros(30, int), np.ones(20, int)]
    s = np.round(rng.random(50), 1)
    w = rng.integers(0, 4, size=(5, 50))
    w[:, 0] = w[:, -1] = 1  # both classes present
    got = stats.weighted_auc(y, s, w)
    for b in range(5):
        idx = np.repeat(np.arange(50), w[b])
        assert got[b] == pytest.approx(roc_auc_score(y[idx], s[idx]))


def test_clustered_auc_equals_weighted_auc_with_video_weights():
    rng = np.random.default_rng(4)
    groups = np.repeat(np.arange(12), 5)
    y = (groups >= 5).astype(int)
    s = np.round(rng.random(60) + 0.2 * y, 1)  # ties within and across videos
    counts = stats.video_resamples((np.arange(12) >= 5).astype(int), 50, seed=1)
    np.testing.assert_allclose(stats.clustered_auc(y, s, groups, counts),
                               stats.weighted_auc(y, s, counts[:, groups]))


def test_video_resamples_stratified_and_seeded():
    labels = [0] * 4 + [1] * 6
    c = stats.video_resamples(labels, 100, seed=3)
    assert c.shape == (100, 10)
    assert (c[:, :4].sum(axis=1) == 4).all() and (c[:, 4:].sum(axis=1) == 6).all()
    np.testing.assert_array_equal(c, stats.video_resamples(labels, 100, seed=3))
    assert not np.array_equal(c, stats.video_resamples(labels, 100, seed=4))


def _clustered_scores(n_boot_rows=False):
    """Videos whose frames share the video's score: all 8 frames of a video are identical, so
    frame resampling (80 'independent' frames per class) understates the spread that video
    resampling (10 videos per class) shows."""
    rng = np.random.default_rng(5)
    rows = []
    for v in range(20):
        label = int(v >= 10)
        s = float(rng.normal(0.5 + 0.15 * label, 0.2))
        for f in range(8):
            rows.append(dict(protocol="p", method="m", seed=0, train_set="t", test_set="x",
                             quality="c23", video_id=f"{'DF' if label else 'real'}/{v}",
                             frame_idx=f, label=label, manipulation="DF" if label else "real",
                             perturbation="none", severity=0, score=s))
    return pd.DataFrame(rows)


def test_bootstrap_ci_resamples_videos_not_frames():
    df = _clustered_scores()
    m = compute_metrics(df, n_boot=2000, boot_seed=0)
    frame = m[(m.level == "frame") & (m.subset == "all")].iloc[0]
    video = m[(m.level == "video") & (m.subset == "all")].iloc[0]
    # every frame of a video has the video's score, so frame- and video-level CIs must agree
    assert frame.auc == pytest.approx(video.auc)
    assert frame.auc_ci_low == pytest.approx(video.auc_ci_low)
    assert frame.auc_ci_high == pytest.approx(video.auc_ci_high)
    # resampling the 160 frames independently would give a much narrower interval
    y, s = df["label"].to_numpy(), df["score"].to_numpy()
    rng = np.random.default_rng(0)
    by_frame = [roc_auc_score(y[i], s[i]) for i in
                (np.r_[rng.choice(80, 80), 80 + rng.choice(80, 80)] for _ in range(500))]
    lo, hi = np.percentile(by_frame, [2.5, 97.5])
    assert (hi - lo) < 0.6 * (frame.auc_ci_high - frame.auc_ci_low)
    assert frame.auc_ci_low < frame.auc < frame.auc_ci_high


def test_headline_ci_from_common_resamples_and_no_ci_without_bootstrap():
    base = _clustered_scores()
    shifted = base.assign(severity=1, score=base["score"] + 0.01 * base["frame_idx"])
    df = pd.concat([base, shifted], ignore_index=True)
    m = compute_metrics(df, n_boot=500, boot_seed=0)
    head = headline_rows(m)
    row = head[(head.level == "video") & (head.subset == "all")].iloc[0]
    assert pd.isna(row.severity)
    # severity 1 only adds a per-frame offset that the video mean shifts uniformly: same ranking
    conds = m[(m.level == "video") & (m.subset == "all") & m.severity.notna()]
    assert conds.auc_ci_low.nunique() == 1
    assert row.auc_ci_low == pytest.approx(conds.auc_ci_low.iloc[0])
    assert compute_metrics(df)[["auc_ci_low", "auc_ci_high"]].isna().all().all()


def test_significance_pairs_by_image_and_reference_is_a_parameter():
    rows = []
    for method, scores in (("ref", A), ("other", B)):
        for sev in (0, 1):
            for i, (y, s) in enumerate(zip(LABELS, scores)):
                rows.append(dict(protocol="p", method=method, seed=0, train_set="t", test_set="x",
                                 quality="c23", video_id=f"v{i}", frame_idx=0, label=y,
                                 manipulation="DF" if y else "real", perturbation="none",
                                 severity=sev, score=s))
    df = pd.DataFrame(rows).sample(frac=1, random_state=0)  # pairing must not rely on row order
    sig = compare.significance(df, reference="ref")
    # one frame per video: the video level is the worked example, tested by DeLong over videos
    row = sig[(sig.level == "video") & (sig.subset == "all") & (sig.severity == 0)].iloc[0]
    assert (row.method, row.reference_method, row.test) == ("other", "ref", "delong_videos")
    assert row.auc_method == pytest.approx(11 / 12) and row.auc_reference == pytest.approx(5 / 6)
    assert row.z == pytest.approx(math.sqrt(18) / 12)  # method minus reference
    assert row.p_value == pytest.approx(0.7236736, abs=1e-6)
    head = sig[(sig.level == "video") & (sig.subset == "all") & sig.severity.isna()]
    assert len(head) == 1 and head.iloc[0].z == pytest.approx(math.sqrt(18) / 12)
    frame = sig[(sig.level == "frame") & (sig.subset == "all") & (sig.severity == 0)].iloc[0]
    assert frame.test == "bootstrap_videos" and frame["diff"] == pytest.approx(11 / 12 - 5 / 6)
    assert compare.significance(df, reference="dpl").empty


def test_seed_summary_mean_and_std():
    df = pd.concat([_clustered_scores().assign(seed=s, score=lambda d, s=s: d["score"] * (1 + s))
                    for s in (0, 1)], ignore_index=True)
    df.loc[(df.seed == 1) & (df.label == 0) & (df.video_id == "real/0"), "score"] = 9.0
    m = compute_metrics(df)
    summary = compare.seed_summary(m)
    row = summary[(summary.level == "video") & (summary.subset == "all")].iloc[0]
    a = m[(m.level == "video") & (m.subset == "all")].sort_values("seed").auc.to_numpy()
    assert row.n_seeds == 2
    assert row.auc_mean == pytest.approx(a.mean()) and row.auc_std == pytest.approx(abs(a[0] - a[1]) / math.sqrt(2))
