"""The engine never loses a trained model: a run with other settings trains beside it and
replaces it only once complete; a completed run is reused; a diverging training stops at that
step with its last good state; a damaged or foreign checkpoint is one line."""
import json
import math

import pytest
import torch

from benchmark import engine, io
from benchmark.data.frames import TrainFrames
from benchmark.errors import UserError
from benchmark.pipeline import provenance
from benchmark.report.tables import axis
from test_engine import Interrupt, Scripted, Stopping, Tiny, frames, levels  # noqa: F401  (frames is a fixture)
from test_engine_stages import TwoStage

CFG = {"epochs": 2, "batch_size": 4, "optimizer": {"type": "Adam", "lr": 0.01}}  # 12 frames: 3 steps/epoch


def _train(frames, work, method, fingerprint="fp", cfg=CFG):
    torch.manual_seed(0)
    return engine.train(method, TrainFrames(frames[0], frames[1], seed=0), work, cfg, seed=0, levels=levels,
                        fingerprint=fingerprint)


def _nan_weight(method):
    with torch.no_grad():
        method.head.weight[0, 0] = math.nan


def Diverging(at):  # noqa: N802
    """Tiny whose head weight becomes NaN before its ``at``-th step (as an exploding update would)."""
    return Scripted(at, _nan_weight)


class DivergingTwoStage(TwoStage):
    """A finite loss, then an update that leaves a weight infinite: the weights check catches it."""

    def train_step(self, batch, optim_wrapper):
        out = super().train_step(batch, optim_wrapper)
        with torch.no_grad():
            self.head.bias.fill_(math.inf)
        return out

    def training_stages(self, epochs):
        return [("a", epochs), ("b", 1)]


def test_a_failing_run_with_other_settings_never_touches_the_trained_model(frames, tmp_path):
    _train(frames, tmp_path / "w", Tiny(), "one")
    before = (tmp_path / "w" / "model.pt").read_bytes()
    with pytest.raises(Interrupt):  # another configuration, stopped half way (a bad value, a kill)
        _train(frames, tmp_path / "w", Stopping(stop_at=4), "two")
    assert (tmp_path / "w" / "model.pt").read_bytes() == before
    assert json.loads((tmp_path / "w" / "train.json").read_text())["fingerprint"] == "one"
    assert (engine.partial_dir(tmp_path / "w", "two") / "epoch_1.pth").is_file()  # resumable beside it
    _train(frames, tmp_path / "w", Tiny(), "two")  # completed: now it replaces the old model, atomically
    assert json.loads((tmp_path / "w" / "train.json").read_text())["fingerprint"] == "two"
    assert not engine.partial_dir(tmp_path / "w", "two").exists()


def test_a_completed_run_of_the_same_fingerprint_is_reused(frames, tmp_path):
    first = _train(frames, tmp_path / "w", Tiny())
    again = Stopping(stop_at=1)  # would raise at its first step: it must take none
    assert _train(frames, tmp_path / "w", again) == first and again.steps == 0
    assert torch.equal(again.head.weight, io.load_tensors(tmp_path / "w" / "model.pt")["head.weight"])


def test_divergence_stops_at_the_step_and_keeps_the_last_good_checkpoint(frames, tmp_path):
    summary = _train(frames, tmp_path / "w", Diverging(at=5))  # step 5 = epoch 2, iteration 2
    assert summary["diverged"] == {"stage": "train", "epoch": 2, "iteration": 2, "what": "loss = nan",
                                   "kept": "epoch 1 of stage train"}
    model = io.load_tensors(tmp_path / "w" / "model.pt")
    epoch1 = engine.method_state(tmp_path / "w" / "epoch_1.pth")
    assert all(torch.equal(model[k], epoch1[k]) for k in model) and all(v.isfinite().all() for v in model.values())
    assert json.loads((tmp_path / "w" / "train.json").read_text())["diverged"]["epoch"] == 2
    start = Diverging(at=1)
    init = {k: v.clone() for k, v in start.state_dict().items()}
    first = _train(frames, tmp_path / "v", start)  # in epoch 1: nothing good but the start
    assert first["diverged"]["kept"].startswith("the state stage train started from")
    assert all(torch.equal(start.state_dict()[k], init[k]) for k in init)


def test_a_stage_that_diverges_skips_the_later_stages(frames, tmp_path):
    summary = _train(frames, tmp_path / "w", DivergingTwoStage())
    assert [s["stage"] for s in summary["stages"]] == ["a"] and summary["diverged"]["what"] == "head.bias is not finite"
    assert not (tmp_path / "w" / "b").exists()


def test_the_report_marks_a_diverged_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    record = tmp_path / "models/ff_c23/dpl/seed0/train.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"diverged": {"stage": "I", "epoch": 3, "iteration": 7, "what": "loss = nan",
                                               "kept": "epoch 2 of stage I"}}))
    notes, marks = provenance.flagged(["baseline", "dpl"], [0], ["ff_c23"])
    assert marks == {"dpl": "†"} and "dpl (seed 0, ff_c23): training diverged at stage I, epoch 3, iteration 7" in notes[0]
    rows = axis("method", ["baseline", "dpl"], {}, {"methods": {"baseline": {}, "dpl": {}}, "marks": marks})
    assert rows == [("baseline", "baseline"), ("dpl", "dpl †")]


def test_a_methods_caveat_marks_its_rows_and_is_said_once(tmp_path, monkeypatch):
    """UIA-ViT from random init says what its row measures; seeds with the same caveat say it once."""
    from methods.uia_vit import UIAViT
    monkeypatch.chdir(tmp_path)
    caveat = UIAViT(backbone="vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, feature_layer=1,
                    attention_layers=(2,)).provenance()["caveat"]
    assert "grid.methods=[baseline_vit,uia_vit]" in caveat and "pretrained" in caveat  # the command that runs it
    for seed in (0, 1):
        record = tmp_path / f"models/ff_c23/uia_vit/seed{seed}/train.json"
        record.parent.mkdir(parents=True)
        record.write_text(json.dumps({"provenance": {"weights": "random init", "caveat": caveat}}))
    notes, marks = provenance.flagged(["baseline", "uia_vit"], [0, 1], ["ff_c23"])
    assert marks == {"uia_vit": "†"} and notes == [f"† uia_vit: {caveat}"]


@pytest.mark.parametrize("damage, fragment", [
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "cannot be loaded as tensors"),
    (lambda p: torch.save({"state_dict": {"method.other": torch.zeros(2)}}, p), "holds another model's tensors"),
])
def test_a_damaged_or_foreign_checkpoint_is_one_line_naming_it(frames, tmp_path, damage, fragment):
    with pytest.raises(Interrupt):
        _train(frames, tmp_path / "w", Stopping(stop_at=5))
    ckpt = engine.partial_dir(tmp_path / "w", "fp") / "epoch_1.pth"
    damage(ckpt)
    with pytest.raises(UserError, match=rf"epoch_1.pth .*{fragment}.*delete"):
        _train(frames, tmp_path / "w", Tiny())
    assert not (tmp_path / "w").exists()


def test_non_finite_scores_leave_their_aucs_empty_and_are_marked_not_fatal(tmp_path, monkeypatch):
    """Today's UIA-ViT case: NaN scores no longer fail the report stage."""
    import numpy as np
    import pandas as pd
    from benchmark.evaluation.compare import significance
    from benchmark.evaluation.metrics import compute_metrics
    monkeypatch.chdir(tmp_path)
    rows = [dict(protocol="p", method=m, seed=0, train_set="t", test_set="x", quality="c23", perturbation="none",
                 severity=0, video_id=f"v{i}", frame_idx=0, label=i % 2, manipulation="DF" if i % 2 else "real",
                 score=math.nan if (m == "bad" and i == 3) else i / 10) for m in ("good", "bad") for i in range(8)]
    scores = pd.DataFrame(rows)
    m = compute_metrics(scores, n_boot=20)
    assert m[m.method == "bad"].auc.isna().all() and m[m.method == "good"].auc.notna().all()
    sig = significance(scores, "good", n_boot=20)
    assert sig.p_value.isna().all() and np.isnan(sig.auc_method).all()
    notes, marks = provenance.flagged(["good", "bad"], [0], ["t"], scores)
    assert marks == {"bad": "†"} and "1 of 8 scores are not finite" in notes[0]
