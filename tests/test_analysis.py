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


def test_level_cell_auc_by_hand():
    # cell (1, 1): real 0.5 vs fake 0.4 -> AUC 0; cell (2, 1): real -1 vs fake -0.9 -> 1;
    # pooled: fakes beat reals in 2 of 4 pairs -> 0.5; cell (3, 1) has only a real -> NaN
    df = pd.DataFrame({"label": [0, 1, 0, 1, 0], "last_step": [1, 1, 1, 1, 2], "vqi_level": [1, 1, 2, 2, 3],
                       "fii_level": [1] * 5, "logit_1": [0.5, 0.4, -1.0, -0.9, 9.0], "logit_2": [0, 0, 0, 0, 0.3]})
    out = analysis.level_cell_auc(df).set_index("vqi_level")
    assert out.loc[1, "auc"] == 0.0 and out.loc[2, "auc"] == 1.0 and pd.isna(out.loc[3, "auc"])
    assert out.loc[3, ["n_real", "n_fake"]].tolist() == [1, 0]
    # pooled with the fifth sample's final logit 0.3 (its step 2): fakes .4 -.9 vs reals .5 -1 .3 -> 3 of 6
    assert set(out["pooled_auc"]) == {0.5}


def test_logit_by_steps_by_hand():
    # finals: s0 (1 step) 0.1, s1 (2 steps) 0.2, fakes (2 steps) 0.5, 0.9
    out = analysis.logit_by_steps(frame())
    assert out.to_dict("records") == [{"label": 0, "steps": 1, "n": 1, "mean_logit": 0.1},
                                      {"label": 0, "steps": 2, "n": 1, "mean_logit": 0.2},
                                      {"label": 1, "steps": 2, "n": 2, "mean_logit": pytest.approx(0.7)}]


def test_dpl_analysis_writes_its_tables_and_captions(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    df = frame().assign(vqi_level=[1, 1, 1, 1], fii_level=[2, 2, 2, 2], test_set="c23")  # one cell
    for kind, fn, plot in (("level_auc", analysis.level_cell_auc, analysis.plot_level_auc),
                           ("real_logit", analysis.logit_by_steps, analysis.plot_logit_by_steps)):
        paths = plot(fn(df).assign(test_set="c23"), "m")
        assert {p.suffix for p in paths} == {".png", ".svg", ".txt"}
        assert "m" in paths[-1].read_text()
    # finals .1 .2 (reals) .5 .9 (fakes): AUC 1 in the one cell and pooled
    assert "c23 100.0 vs 100.0" in (tmp_path / "results/plots/m_level_auc.txt").read_text()
    assert "c23 0.10" in (tmp_path / "results/plots/m_real_logit.txt").read_text()  # reals' spread .2 - .1
