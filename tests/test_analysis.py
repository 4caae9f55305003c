"""benchmark.analysis: per-step AUC, position counts and level histograms by hand; plots written."""
import benchmark  # noqa: F401
import matplotlib
import pandas as pd
import pytest

from benchmark.report import analysis

matplotlib.use("Agg")


def frame():
    # labels 0 0 1 1; step 1 ranks them 0.1 0.4 0.35 0.8 -> AUC 3/4; step 2 perfectly -> 1
    return pd.DataFrame({"label": [0, 0, 1, 1], "last_step": [1, 2, 2, 2],
                         "logit_1": [0.1, 0.4, 0.35, 0.8], "logit_2": [0.1, 0.2, 0.5, 0.9],
                         "start_1": [3, 5, 5, 7]})


def test_step_auc_by_hand():
    out = analysis.step_auc(frame())
    assert out["auc_all"].tolist() == [0.75, 1.0]
    # active at t=2: samples 1..3 (labels 0 1 1, scores .2 .5 .9) -> 1.0
    assert out["auc_active"].tolist() == [0.75, 1.0] and out["n_active"].tolist() == [4, 3]


def test_positions_count_only_used_windows():
    out = analysis.position_counts(frame())  # sample 0 stops at step 1: its l_1 shaped nothing used
    assert out.to_dict("records") == [{"step": 1, "start": 5, "count": 2}, {"step": 1, "start": 7, "count": 1}]


def test_level_counts_and_plots(tmp_path, monkeypatch):
    rows = pd.DataFrame({"quality": ["c23", "c23", "c40"], "manipulation": ["real", "DF", "DF"],
                         "vqi_level": [1, 1, 4], "fii_level": [2, 3, 3]})
    counts = analysis.level_counts(rows)
    vqi = counts[counts["indicator"] == "vqi"].set_index(["group", "level"])["count"].to_dict()
    assert vqi == {("c23", 1): 2, ("c40", 4): 1}
    fii = counts[counts["indicator"] == "fii"].set_index(["group", "level"])["count"].to_dict()
    assert fii == {("DF", 3): 2, ("real", 2): 1}
    monkeypatch.chdir(tmp_path)
    paths = analysis.plot_levels(counts, {"vqi_vs_crf": {"rho": -0.66}})
    assert {p.suffix for p in paths} == {".png", ".svg", ".txt"} and all(p.stat().st_size > 0 for p in paths)
    assert "-0.66" in (tmp_path / "results/plots/indicator_levels.txt").read_text()
    step = analysis.step_auc(frame()).assign(test_set="c23")
    assert "t=2 (100.00)" in (analysis.plot_step_auc(step, "m")[-1]).read_text()
