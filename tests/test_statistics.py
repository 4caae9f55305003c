"""Statistics that hold: hand values of the bootstrap test, Holm and the logit interval; the CI's
coverage and the tests' size on simulated scores clustered by video (a small version of
benchmarks/ci_coverage.py, whose 1,000-dataset figures are in the issue note)."""
import math

import benchmark  # noqa: F401  (torchvision shim)
import numpy as np
import pandas as pd
import pytest

from benchmark.evaluation import compare, simulate, stats
from benchmark.evaluation.metrics import compute_metrics
from benchmark.report.extras import significance_table


def test_bootstrap_test_by_hand():
    reps = [-0.1, 0.05, 0.1, 0.2, 0.3]  # one replicate at or below 0, four at or above
    out = stats.bootstrap_test(0.1, reps)
    assert out["p_value"] == pytest.approx(2 * (1 + 1) / (1 + 5))
    assert out["z"] == pytest.approx(0.1 / np.std(reps, ddof=1))
    assert stats.bootstrap_test(0.0, [0.0, 0.0, 0.0]) == {"z": 0.0, "p_value": 1.0}  # identical methods
    assert stats.bootstrap_test(0.5, [0.4] * 999)["p_value"] == pytest.approx(2 / 1000)  # never 0
    assert math.isnan(stats.bootstrap_test(0.1, [])["p_value"])


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04, 0.5 (m = 4): 4*0.01 = 0.04, 3*0.03 = 0.09, max(0.09, 2*0.04), 1*0.5
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, np.nan, 0.5]), [0.04, 0.09, 0.09, np.nan, 0.5])
    np.testing.assert_allclose(stats.holm([0.6, 0.5]), [1.0, 1.0])  # capped at 1, monotone


def test_logit_interval_by_hand():
    logit = math.log(0.8 / 0.2)
    reps = 1 / (1 + np.exp(-(logit + np.array([-1.0, 0.0, 1.0]))))  # logits with sd exactly 1
    lo, hi = stats.logit_ci(0.8, reps)
    assert lo == pytest.approx(1 / (1 + math.exp(-(logit - 1.959964))), abs=1e-6)
    assert hi == pytest.approx(1 / (1 + math.exp(-(logit + 1.959964))), abs=1e-6)
    assert stats.logit_ci(1.0, [1.0, 1.0, 0.9]) == stats.percentile_ci([1.0, 1.0, 0.9])  # no logit of 1


def _scores(rng, method, auc):
    labels, scores, video = simulate.clustered(rng, 20, 20, 4, auc, 0.5)
    return pd.DataFrame(dict(protocol="p", method=method, seed=0, train_set="t", test_set="x", quality="c23",
                             perturbation="none", severity=0, video_id=[f"v{v}" for v in video],
                             frame_idx=np.arange(video.size), label=labels,
                             manipulation=np.where(labels == 1, "DF", "real"), score=scores))


def test_metrics_ci_is_the_logit_interval_of_the_video_bootstrap():
    df = _scores(np.random.default_rng(0), "m", 0.8)
    row = compute_metrics(df, n_boot=200, boot_seed=3).query("level == 'frame' and subset == 'all'").iloc[0]
    videos, g = np.unique(df["video_id"], return_inverse=True)
    vlab = np.zeros(videos.size, int)
    vlab[g] = df["label"]
    reps = stats.clustered_auc(df["label"], df["score"], g, stats.video_resamples(vlab, 200, 3))
    assert (row.auc_ci_low, row.auc_ci_high) == pytest.approx(stats.logit_ci(row.auc, reps))


def test_the_95_interval_covers_the_truth_and_frames_as_independent_do_not():
    cov = simulate.coverage(n_sets=200, n_boot=200, n_real=20, n_fake=40, frames=8, auc=0.8, icc=0.5, seed=1)
    assert 0.90 <= cov["logit"] <= 0.99, cov  # 95 % +- 2 binomial sd at 200 datasets
    assert cov["frames_iid"] < 0.85, cov  # the clustering is real: ignoring it undercovers


def test_frame_level_test_holds_its_size_where_delong_over_frames_does_not():
    size = simulate.rejection_rates(n_sets=200, n_boot=200, n_real=20, n_fake=40, frames=8, auc=0.8, icc=0.5,
                                    seed=2)
    assert size["bootstrap_videos"] <= 0.10 and size["delong_videos"] <= 0.10, size
    assert size["delong_frames"] >= 0.15, size  # frames as independent: far too many false positives


def test_significance_uses_video_tests_and_holm_within_a_table(tmp_path):
    rng = np.random.default_rng(4)
    df = pd.concat([_scores(rng, m, a) for m, a in (("ref", 0.8), ("a", 0.8), ("b", 0.6))], ignore_index=True)
    for m in ("a", "b"):  # the same images for every method: reuse the reference's labels and ids
        df.loc[df.method == m, ["video_id", "frame_idx", "label", "manipulation"]] = \
            df.loc[df.method == "ref", ["video_id", "frame_idx", "label", "manipulation"]].to_numpy()
    sig = compare.significance(df, "ref", n_boot=200, seed=0)
    assert set(zip(sig.level, sig.test)) == {("frame", "bootstrap_videos"), ("video", "delong_videos")}
    for _, fam in sig.groupby(compare.FAMILY, dropna=False):
        np.testing.assert_allclose(fam.p_holm, stats.holm(fam.p_value))
        assert (fam.p_holm >= fam.p_value).all() and len(fam) == 4  # 2 methods x (DF, all)
    sig.to_csv(tmp_path / "significance.csv", index=False)
    table = significance_table(tmp_path / "significance.csv")
    assert table.columns[-2:] == ["p (Holm)", "Test"] and len(table.rows) == len(sig)
    assert [c.text for c in table.rows[0][1][-2:]] == [f"{sig.p_holm.iloc[0]:.3g}", "bootstrap (videos)"]
