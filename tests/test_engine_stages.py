"""Multi-stage training (Method.training_stages / set_stage / stage_checkpoint) in the engine."""
import json

import pytest
import torch

from benchmark import engine, io
from benchmark.data.frames import TrainFrames
from benchmark.errors import UserError
from test_engine import Tiny, frames, levels  # noqa: F401  (frames is a fixture)


class TwoStage(Tiny):
    """Stage a trains everything; stage b only the head (as DPL's stage II trains only Phi, V)."""

    def __init__(self, pick=None):
        super().__init__()
        self.pick, self.seen = pick, []

    def training_stages(self, epochs):
        return [("a", epochs), ("b", 1)]

    def set_stage(self, stage):
        self.seen.append(stage)
        for p in self.conv.parameters():
            p.requires_grad_(stage == "a")

    def stage_checkpoint(self, stage):
        return self.pick if stage == "b" else None


def _run(frames, work, pick=None, epochs=2):
    torch.manual_seed(0)
    method = TwoStage(pick)
    ds = TrainFrames(frames[0], frames[1], seed=0)
    cfg = {"epochs": epochs, "batch_size": 4, "optimizer": {"type": "Adam", "lr": 0.01}}
    return method, engine.train(method, ds, work, cfg, seed=0, levels=levels, fingerprint="fp")


def test_each_stage_is_its_own_runner_and_frozen_parts_stay(frames, tmp_path):
    method, summary = _run(frames, tmp_path / "w")
    assert method.seen == ["a", "b"]
    assert [s["stage"] for s in summary["stages"]] == ["a", "b"] and summary["iters"] == 6 + 3
    end_a = torch.load(tmp_path / "w" / "a" / "epoch_2.pth", weights_only=True)["state_dict"]
    final = io.load_tensors(tmp_path / "w" / "model.pt")
    assert torch.equal(final["conv.weight"], end_a["method.conv.weight"])  # frozen in stage b
    assert not torch.equal(final["head.weight"], end_a["method.head.weight"])  # trained in stage b
    assert (tmp_path / "w" / "b" / "epoch_1.pth").is_file()
    assert json.loads((tmp_path / "w" / "train.json").read_text())["epochs"] == 3


def test_a_later_stage_can_start_from_an_earlier_epoch_and_resumes(frames, tmp_path):
    method, _ = _run(frames, tmp_path / "w", pick=1)
    epoch1 = torch.load(tmp_path / "w" / "a" / "epoch_1.pth", weights_only=True)["state_dict"]
    assert (tmp_path / "w" / "a" / "epoch_2.pth").is_file()  # every stage-a epoch kept
    assert torch.equal(method.conv.weight, epoch1["method.conv.weight"])
    straight = {k: v.clone() for k, v in method.state_dict().items()}
    (tmp_path / "w" / "model.pt").unlink()
    again, summary = _run(frames, tmp_path / "w", pick=1)  # both stages complete: resumed, nothing retrained
    assert all(torch.equal(straight[k], v) for k, v in again.state_dict().items())
    with pytest.raises(UserError, match="epoch_7.pth"):
        _run(frames, tmp_path / "x", pick=7)
