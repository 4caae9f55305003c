"""Data-parallel training on the CPU: two ``torchrun`` processes (gloo) against one process with the
same global batch (tests/_ddp_cases.py holds the cases and says how each comparison is made exact).

The two-process run must end with the one-process weights (to float tolerance: the mean of two
half-batch gradients is rounded otherwise than one full-batch gradient), for ``baseline``, for
``qad`` with its adversarial weight perturbation and for DPL's stage II (PPO), under the paper's
reading and under the release's (whose L_REG and PPO normalise by counts of the global batch:
``engine.distributed.global_count``); each method's own
``train_step`` must have run under the launcher (QAD's AWP changes the weights measurably; DPL's
stage II took ``ppo_epochs`` optimiser steps per batch with the backbone frozen); and only rank 0
wrote anything (Python's audit hook saw every file opened for writing, renamed or removed).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import _ddp_cases as cases
from benchmark import io

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data, out = tmp_path_factory.mktemp("crops"), tmp_path_factory.mktemp("ddp")
    crops = cases.make_crops(data)
    crops.to_parquet(data / "crops.parquet")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(ROOT / "tests" / "_ddp_cases.py"), str(data), str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    single = tmp_path_factory.mktemp("single")
    with cases.sharded_draws():
        ref = {name: cases.train_case(name, crops, data, single / name) for name in cases.CASES}
    return {"data": data, "out": out, "single": single, "ref": ref, "crops": crops}


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("name", list(cases.CASES))
def test_two_processes_end_with_the_one_process_weights(runs, name):
    ddp = io.load_tensors(runs["out"] / name / "model.pt")
    assert _max_diff(ddp, runs["ref"][name]) < TOL
    torch.manual_seed(0)  # the weights moved far more than the tolerance: the comparison has teeth
    init = cases.build(name).state_dict()
    assert _max_diff(init, runs["ref"][name]) > 100 * TOL
    summary = json.loads((runs["out"] / name / "train.json").read_text())
    assert summary["compute"]["world_size"] == 2 and summary["compute"]["launcher"] == "pytorch"
    # the logged losses are the global batch's (mean over the ranks), as in one process
    a = pd.read_csv(runs["out"] / name / "history.csv")["train_loss"]
    b = pd.read_csv(runs["single"] / name / "history.csv")["train_loss"]
    assert a.to_numpy() == pytest.approx(b.to_numpy(), abs=1e-5)


def test_qad_weight_perturbation_ran_under_the_launcher(runs, tmp_path):
    ddp = io.load_tensors(runs["out"] / "qad" / "model.pt")
    summary = json.loads((runs["out"] / "qad" / "train.json").read_text())
    assert summary["iters"] == 2  # 16 images / global batch 8, each an AWP step (awp_warmup_epochs 0)
    plain = cases.train_case("qad", runs["crops"], runs["data"], tmp_path / "plain", awp_gamma=0.0)
    assert _max_diff(plain, ddp) > 100 * _max_diff(ddp, runs["ref"]["qad"])


@pytest.mark.parametrize("name, updates, trained", [("dpl", 2, {"policy", "value"}),  # ppo_epochs 2
                                                     ("dpl_release", 1, {"policy"})])  # V shares Phi's trunk
def test_dpl_stage2_ran_its_ppo_updates_under_the_launcher(runs, name, updates, trained):
    stage1 = torch.load(runs["out"] / name / "I" / "epoch_1.pth", weights_only=True)["state_dict"]
    stage2 = torch.load(runs["out"] / name / "II" / "epoch_1.pth", weights_only=True)
    steps = {int(s["step"]) for s in stage2["optimizer"]["state"].values()}
    assert steps == {2 * updates}  # 2 batches x ppo_epochs updates each
    final = stage2["state_dict"]
    moved = {k.split(".")[1] for k in final if not torch.equal(final[k], stage1[k])}
    assert moved == trained  # Phi (and V) trained, everything else frozen


def test_only_rank_0_wrote(runs):
    rank0 = json.loads((runs["data"] / "writes_rank0.json").read_text())
    rank1 = json.loads((runs["data"] / "writes_rank1.json").read_text())
    assert rank1 == []
    written = {Path(p).relative_to(runs["out"]).parts[0] for _, p in rank0}
    # training writes into the hidden partial dir `.<name>.partial-<fingerprint>`, swapped in at the end
    assert {w.lstrip(".").partition(".partial-")[0] for w in written} == set(cases.CASES)
    for name in cases.CASES:
        assert {"model.pt", "train.json", "history.csv", "run.json"} <= {p.name for p in (runs["out"] / name).iterdir()}
