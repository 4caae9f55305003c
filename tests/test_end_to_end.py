"""The whole paper's pipeline on a tiny SynthFF, through `dvc repro` exactly as a user runs it:
every protocol, one report; then `run` finds nothing to do, an experiment shows its metric
beside the workspace's, and editing a helper invalidates only the stages of its users."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmark import config

pytestmark = pytest.mark.long   # most of the suite's time: collected first (tests/conftest.py)
ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).with_name("dvc")
COLUMNS = ["protocol", "method", "seed", "train_set", "test_set", "subset", "quality", "perturbation",
           "severity", "level", "auc", "ap", "eer", "acc", "auc_ci_low", "auc_ci_high", "n_real", "n_fake"]

# profiles/tiny.yaml (every stage on data of seconds), on the two reference methods and those that
# use the engine's capabilities (quality_pair, manipulation_label); every method is covered by
# tests/test_methods.py
GRID_METHODS = ["baseline", "dpl", "qad", "ucf"]
# every protocol, each cut to a few rows: together they hold every kind of row -- shared (another
# protocol's model), reused (identical options, or a first training stage) and trained -- with one
# variant trained for its own options (dpl_concat); each stage costs a process start, so no more
PROTOCOL_CUTS = {
    "cross_manipulation": {"methods": ["dpl"], "train_sets": [{"name": "ff_c23_DF", "label": "DF"},
                                                              {"name": "ff_c23_NT", "label": "NT"}]},
    "cross_dataset": {"test_sets": [{"name": "FSH", "dataset": "fsh", "quality": "c23", "split": "test"}]},
    "robustness": {"distortions": {"codes": ["VC"], "severities": [1]}},
    "ablation_components": {"methods": [{"name": "baseline", "label": "Baseline", "paper": "baseline"},
                                        {"name": "dpl_wo_stage2", "label": "w/o II", "paper": "no_stage2"},
                                        {"name": "dpl", "label": "DPL", "paper": "dpl"}]},
    "ablation_backbone": {"methods": [{"name": "baseline_resnet", "label": "R", "paper": "resnet50"},
                                      {"name": "dpl_resnet", "label": "R+DPL", "paper": "resnet50_dpl"}]},
    "ablation_fusion": {"methods": [{"name": "dpl", "label": "Add"}, {"name": "dpl_concat", "label": "Concat"}]},
    "ablation_lreg": {"methods": [{"name": "dpl", "label": "all"}]},
    "ablation_clip": {"methods": [{"name": "dpl", "label": "DPL"}]},
    "ablation_reading": {"methods": [{"name": "baseline", "label": "Baseline (BCE)"},
                                     {"name": "dpl_r_ppo", "label": "release, PPO as printed"},
                                     {"name": "dpl", "label": "DPL, release reading"}]},
}


def make_project(proj: Path) -> dict:
    """A git + DVC project with the tiny grid and its rendered dvc.yaml; returns the env."""
    for name in ("benchmark", "methods", "protocols", "profiles", "results/paper"):
        shutil.copytree(ROOT / name, proj / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in (".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, proj / name)
    params = config.load_params({"profile": "tiny", "grid.methods": json.dumps(GRID_METHODS)}, root=ROOT)
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for name, cut in PROTOCOL_CUTS.items():
        path = proj / "protocols" / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **cut}, sort_keys=False))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(proj), "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run([sys.executable, "-m", "benchmark", "dag"], cwd=proj, env=env, check=True, capture_output=True)
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    subprocess.run([str(DVC), "init", "-q"], cwd=proj, check=True, env=env)
    return env


def _git_commit(proj, env, message):
    subprocess.run(["git", "add", "-A"], cwd=proj, env=env, check=True)
    subprocess.run(["git", "commit", "-qm", message], cwd=proj, env=env, check=True)


def _run(proj, env, *args):
    return subprocess.run([sys.executable, "-m", "benchmark", *args], cwd=proj, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    if not DVC.exists():
        pytest.skip(f"dvc is not installed next to {sys.executable}")
    proj = tmp_path_factory.mktemp("project")
    env = make_project(proj)
    repro = subprocess.run([str(DVC), "repro"], cwd=proj, env=env, capture_output=True, text=True)
    assert repro.returncode == 0, repro.stdout[-3000:] + repro.stderr[-3000:]
    _git_commit(proj, env, "tiny grid")
    return proj, env


def test_repro_writes_every_protocol_into_one_report(project):
    proj, _ = project
    metrics = pd.read_csv(proj / "results/metrics.csv")
    assert list(metrics.columns) == COLUMNS
    protocols = yaml.safe_load((proj / "params.yaml").read_text())["grid"]["protocols"]
    assert set(metrics["protocol"]) == set(protocols)
    assert set(metrics.loc[metrics.protocol == "cross_quality", "method"]) == set(GRID_METHODS)
    assert set(metrics.loc[metrics.protocol == "cross_manipulation", "train_set"]) == {"ff_c23_DF", "ff_c23_NT"}
    assert set(metrics.loc[metrics.protocol == "cross_dataset", "test_set"]) == {"FSH"}
    rob = metrics[metrics.protocol == "robustness"]
    assert set(rob["perturbation"]) == {"VC"} and set(rob["severity"].dropna()) == {1}
    measured = metrics[metrics["auc"].notna()]  # video-bootstrap CI wherever the AUC is defined
    assert measured["auc_ci_low"].notna().all() and (measured["auc_ci_low"] <= measured["auc_ci_high"]).all()
    html = (proj / "results/report.html").read_text()
    for name in protocols:
        assert f'<section class="protocol" id="{name}">' in html and f'href="#{name}"' in html  # in the contents
    assert "Measured minus published" in html and "Training curves" in html
    cost = pd.read_csv(proj / "results/cost.csv")
    assert set(cost["method"]) == set(GRID_METHODS) and set(cost["setting"]) == {"default"}
    tex = (proj / "results/tables/cross_quality.tex").read_text()
    assert "\\toprule" in tex and "baseline" in tex and "dpl" in tex and "\\textbf" in tex


def test_rows_that_are_the_same_share_one_training(project):
    """Tab. 5's w/o stage II is DPL's stage-I checkpoint; Tab. 6's default-backbone rows are the
    grid's models; cross-dataset and robustness read the cross-quality models."""
    import torch
    proj, _ = project
    models = proj / "models/ff_c23"
    wo = torch.load(models / "dpl_wo_stage2/seed0/model.pt", weights_only=True)
    stage1 = torch.load(sorted((models / "dpl/seed0/I").glob("epoch_*.pth"))[-1], weights_only=True)["state_dict"]
    assert wo and all(torch.equal(v, stage1[f"method.{k}"]) for k, v in wo.items())
    assert not any(k.startswith(("policy.", "value.")) for k in wo)
    # stage-II options only, with a stage II: DPL's stage I taken (linked), only stage II trained
    ppo = json.loads((models / "dpl_r_ppo/seed0/train.json").read_text())
    assert [s["stage"] for s in ppo["stages"]] == ["I", "II"] and "adopted_from" in ppo["stages"][0]
    base_i, ppo_i = (sorted((models / m / "seed0/I").glob("epoch_*.pth"))[-1] for m in ("dpl", "dpl_r_ppo"))
    assert ppo_i.read_bytes() == base_i.read_bytes()
    for variant, base in (("baseline_resnet", "baseline"), ("dpl_resnet", "dpl")):
        assert (models / variant / "seed0/model.pt").read_bytes() == (models / base / "seed0/model.pt").read_bytes()
    lock = yaml.safe_load((proj / "dvc.lock").read_text())["stages"]
    assert not any(n.startswith("train-") and "cross_dataset" in n for n in lock)
    deps = [d["path"] for d in lock["evaluate-robustness-dpl@0"]["deps"]]
    assert "models/ff_c23/dpl/seed0" in deps


def test_dvc_views_metrics_and_plots(project, tmp_path):
    proj, env = project
    shown = subprocess.run([str(DVC), "metrics", "show", "--json"], cwd=proj, env=env, capture_output=True, text=True)
    assert shown.returncode == 0 and "results/metrics/cross_quality.json" in shown.stdout, shown.stderr[-2000:]
    plots = subprocess.run([str(DVC), "plots", "show", "-o", str(tmp_path / "dvc_plots")], cwd=proj,
                           env=env, capture_output=True, text=True)
    assert plots.returncode == 0, plots.stdout[-2000:] + plots.stderr[-2000:]
    page = (tmp_path / "dvc_plots" / "index.html").read_text()
    assert "AUC vs severity" in page and "training loss" in page and "tsne.png" in page
    for series in ("robustness/severity/dpl.csv", "models/training/dpl.csv", "models/step_auc/dpl.csv",
                   "cross_quality/roc/c40/dpl.csv"):
        assert (proj / "results/curves" / series).stat().st_size > 0, series


def test_nothing_to_do_again_for_dvc_and_run(project):
    proj, env = project
    again = subprocess.run([str(DVC), "repro"], cwd=proj, env=env, capture_output=True, text=True, check=True)
    assert "Running stage" not in again.stdout
    for protocol in yaml.safe_load((proj / "params.yaml").read_text())["grid"]["protocols"]:
        run = _run(proj, env, "run", f"protocol={protocol}")
        assert run.returncode == 0, run.stderr[-2000:]
        assert "[run]" not in run.stdout and "[skip]" in run.stdout, (protocol, run.stdout[-1500:])
    status = subprocess.run([str(DVC), "status", "--json"], cwd=proj, env=env, capture_output=True, text=True)
    assert status.stdout.strip() in ("{}", ""), status.stdout[:2000]


def test_an_experiment_shows_its_metric_beside_the_workspace(project):
    proj, env = project
    # one variant's option (Tab. 7's Concat row): only its own training reruns, not its base DPL's
    exp = subprocess.run([str(DVC), "exp", "run", "-n", "fusion", "-S", "methods.dpl_concat.fusion=attention"],
                         cwd=proj, env=env, capture_output=True, text=True)
    assert exp.returncode == 0, exp.stdout[-2000:] + exp.stderr[-2000:]
    ran = set(re.findall(r"Running stage '([^']+)'", exp.stdout))
    assert {n for n in ran if n.startswith("train-")} == {"train-dpl_concat-ff_c23@0"}, sorted(ran)
    assert "metrics-ablation_fusion" in ran and "metrics-cross_quality" not in ran, sorted(ran)
    show = subprocess.run([str(DVC), "exp", "show", "--json"], cwd=proj, env=env, capture_output=True, text=True)
    assert show.returncode == 0 and '"fusion"' in show.stdout and "results/metrics/ablation_fusion.json" in show.stdout
    diff = subprocess.run([str(DVC), "metrics", "diff", "HEAD", "--json"], cwd=proj, env=env, capture_output=True,
                          text=True)
    assert diff.returncode == 0 and "results/metrics/ablation_fusion.json" in diff.stdout
    subprocess.run(["git", "checkout", "-q", "--", "."], cwd=proj, check=True)
    subprocess.run([str(DVC), "checkout", "-q"], cwd=proj, env=env, check=True)


def test_an_override_run_has_its_own_workspace_and_leaves_the_pipeline_alone(project):
    proj, env = project
    before = (proj / "models/ff_c23/dpl/seed0/model.pt").read_bytes()
    run = _run(proj, env, "run", "protocol=cross_quality", "method=dpl", "methods.dpl.hidden=8")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    ws = next((proj / ".benchmark/workspaces").glob("cross_quality-dpl-methods.dpl.hidden=8-*"))
    assert f"[run]  .benchmark/workspaces/{ws.name}" in run.stdout
    assert (proj / "models/ff_c23/dpl/seed0/model.pt").read_bytes() == before  # the pipeline's model untouched
    assert (ws / "models/ff_c23/dpl/seed0/model.pt").read_bytes() != before
    log = (ws / ".benchmark/logs/times.tsv").read_text()
    assert "train-dpl-ff_c23@0" in log and "synthesize-ff" not in log  # unchanged stages came from DVC's run cache
    assert json.loads((ws / "results/metrics/cross_quality.json").read_text())["dpl"]
    again = _run(proj, env, "run", "protocol=cross_quality", "method=dpl", "methods.dpl.hidden=8")
    assert "[skip] .benchmark/workspaces/" in again.stdout, again.stdout[-1500:]
    assert _run(proj, env, "run", "protocol=cross_quality", "method=dpl").stdout.count("[run]") == 0  # switching back


def test_editing_a_helper_invalidates_only_its_users(project):
    proj, env = project
    helper = proj / "methods/_ppo.py"
    text = helper.read_text()
    try:
        helper.write_text(text + "\n# edited\n")
        status = subprocess.run([str(DVC), "status", "--json"], cwd=proj, env=env, capture_output=True, text=True)
        stale = set(yaml.safe_load(status.stdout) or {})
    finally:
        helper.write_text(text)
    assert "train-dpl-ff_c23@0" in stale and "train-dpl_concat-ff_c23@0" in stale
    code_stale = {n for n in stale if n.startswith(("train-", "evaluate-", "analyze-"))}
    assert not any("baseline" in n or "qad" in n or "ucf" in n for n in code_stale), sorted(code_stale)


@pytest.mark.parametrize("width", [1024, 1920])
def test_the_whole_papers_report_has_no_overlaps(project, tmp_path, width):
    sys.path.insert(0, str(Path(__file__).parent))
    from _chromium import CHROMIUM, probe
    if CHROMIUM is None:
        pytest.skip("chromium not installed (Debian: apt-get install chromium)")
    proj, _ = project
    got = probe(proj / "results/report.html", width, tmp_path)
    assert got["overlaps"] == [] and got["width"] <= got["viewport"], got["overlaps"][:5]
