"""The whole pipeline on a tiny SynthFF, through `dvc repro` exactly as `make demo` runs it,
then `python -m benchmark run`, which must find everything up to date."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).with_name("dvc")
COLUMNS = ["protocol", "method", "seed", "train_set", "test_set", "subset", "quality", "perturbation",
           "severity", "level", "auc", "ap", "eer", "acc", "auc_ci_low", "auc_ci_high", "n_real", "n_fake"]

TINY = {
    "synthff.pairs": {"train": 2, "val": 1, "test": 1},
    "synthff.frames": 4,
    "synthff.size": 64,
    "extract.frames_per_video": 2,
    "extract.size": 32,
    "train.epochs": 1,
    "train.batch_size": 8,
    "methods.dpl.hidden": 16,
    "cost.settings": ["default"],  # the paper backbones (Xception at 299 px, ...) are too slow here
    # the two reference methods and those that use the engine's capabilities (quality_pair,
    # manipulation_label); every method is covered by tests/test_methods.py
    "grid.methods": ["baseline", "dpl", "qad", "ucf"],
    "methods.dpl.stage2_epochs": 1,
}


def _set(params, dotted, value):
    node = params
    *parents, last = dotted.split(".")
    for p in parents:
        node = node[p]
    assert last in node, dotted  # the override must name a real key
    node[last] = value


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    if not DVC.exists():
        pytest.skip(f"dvc is not installed next to {sys.executable}")
    proj = tmp_path_factory.mktemp("project")
    for name in ("benchmark", "methods", "protocols", "profiles", "results/paper"):
        shutil.copytree(ROOT / name, proj / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", proj)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in TINY.items():
        _set(params, key, value)
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(proj),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    subprocess.run([str(DVC), "init", "-q"], cwd=proj, check=True, env=env)
    repro = subprocess.run([str(DVC), "repro"], cwd=proj, env=env, capture_output=True, text=True)
    assert repro.returncode == 0, repro.stdout[-3000:] + repro.stderr[-3000:]
    return proj, env


def test_repro_writes_the_contracted_outputs(project):
    proj, _ = project
    metrics = pd.read_csv(proj / "results/metrics.csv")
    assert list(metrics.columns) == COLUMNS
    assert set(metrics["method"]) == set(TINY["grid.methods"])
    cost = pd.read_csv(proj / "results/cost.csv")
    assert set(cost["method"]) == set(metrics["method"]) and set(cost["setting"]) == {"default"}
    assert set(metrics["test_set"]) == {"c23", "c40"} and set(metrics["level"]) == {"frame", "video"}
    headline = metrics[metrics["severity"].isna()]
    assert set(headline["subset"]) == {"DF", "F2F", "FS", "NT", "all"}
    assert headline["auc"].between(0, 1).all()
    measured = metrics[metrics["auc"].notna()]  # video-bootstrap CI wherever the AUC is defined
    assert measured["auc_ci_low"].notna().all() and (measured["auc_ci_low"] <= measured["auc_ci_high"]).all()
    assert metrics.loc[metrics["auc"].isna(), "auc_ci_low"].isna().all()
    sig = pd.read_csv(proj / "results/significance.csv")  # dpl is the reference: every other method vs dpl
    assert set(sig["method"]) == set(TINY["grid.methods"]) - {"dpl"} and set(sig["reference_method"]) == {"dpl"}
    assert sig["p_value"].between(0, 1).all()
    assert (pd.read_csv(proj / "results/metrics_seeds.csv")["n_seeds"] == 1).all()
    scores = pd.read_parquet(proj / "results/scores/cross_quality/dpl/ff_c23_seed0.parquet")
    assert sorted(scores["severity"].unique()) == [0, 1, 2, 3]
    assert (scores.loc[scores["severity"] == 0, "jpeg_quality"] == 100).all()
    for path in ("results/report.html", "results/tables/cross_quality.html"):
        html = (proj / path).read_text()
        assert "baseline" in html and "dpl" in html and "SynthFF" in html and "fallback" in html
    tex = (proj / "results/tables/cross_quality.tex").read_text()
    assert "\\toprule" in tex and "baseline" in tex and "dpl" in tex and "\\textbf" in tex


def test_plots_and_dvc_metrics_and_plots_views(project, tmp_path):
    proj, env = project
    for name in ("tsne", "gradcam"):
        for ext in ("png", "svg", "txt"):
            assert (proj / "results/plots" / f"{name}.{ext}").stat().st_size > 0, (name, ext)
    html = (proj / "results/report.html").read_text()
    assert html.count('<img src="data:image/png;base64,') == 3  # t-SNE, Grad-CAM, cross_quality bars
    assert "t-SNE (scikit-learn" in html and "Grad-CAM (pytorch-grad-cam)" in html
    shown = subprocess.run([str(DVC), "metrics", "show", "--json"], cwd=proj, env=env,
                           capture_output=True, text=True)
    assert shown.returncode == 0 and "cross_quality" in shown.stdout, shown.stderr[-2000:]
    plots = subprocess.run([str(DVC), "plots", "show", "-o", str(tmp_path / "dvc_plots")], cwd=proj,
                           env=env, capture_output=True, text=True)
    assert plots.returncode == 0, plots.stdout[-2000:] + plots.stderr[-2000:]
    page = (tmp_path / "dvc_plots" / "index.html").read_text()
    assert "tsne.png" in page and "gradcam.png" in page and "cross_quality_bars" in page


def test_second_repro_and_run_find_everything_up_to_date(project):
    proj, env = project
    again = subprocess.run([str(DVC), "repro"], cwd=proj, env=env, capture_output=True, text=True, check=True)
    assert "Running stage" not in again.stdout
    run = subprocess.run([sys.executable, "-m", "benchmark", "run", "protocol=cross_quality", "method=dpl"],
                         cwd=proj, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "[run]" not in run.stdout  # what dvc made is current for run too
    assert "[skip] train-dpl-0-ff_c23: up to date" in run.stdout
    changed = subprocess.run([sys.executable, "-m", "benchmark", "run", "protocol=cross_quality", "method=dpl",
                              "methods.dpl.hidden=8"], cwd=proj, env=env, capture_output=True, text=True, check=True)
    assert "[run]  train-dpl-0-ff_c23" in changed.stdout and "[run]  evaluate-dpl-cross_quality-0" in changed.stdout
    assert "[skip] extract-ff" in changed.stdout and "baseline" not in changed.stdout.split("wrote")[0]
