"""Multi-stage training (Method.training_stages / set_stage / stage_checkpoint) in the engine."""
import json

import pandas as pd
import pytest
import torch

from benchmark import engine, io
from benchmark.engine.adopt import FinishedStage
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


def _finished(work, name):
    """Stage ``name`` of the training in ``work`` as the pipeline hands it on (engine.adopt)."""
    summary = next(s for s in json.loads((work / "train.json").read_text())["stages"] if s["stage"] == name)
    return FinishedStage(work / name, summary, list(engine.hooks.read_history(work / name).values()))


def _variant(frames, work, method, given):
    ds = TrainFrames(frames[0], frames[1], seed=0)
    cfg = {"epochs": 2, "batch_size": 4, "optimizer": {"type": "Adam", "lr": 0.01}}
    return engine.train(method, ds, work, cfg, seed=0, levels=levels, fingerprint="other", given=given)


class ExtraModule(TwoStage):
    """TwoStage with a module of its own that only stage b trains (as another Phi/V trunk would be)."""

    def __init__(self):
        super().__init__()
        self.extra = torch.nn.Linear(3, 2)


class OtherConv(TwoStage):
    """TwoStage whose frozen part has another shape: it cannot start from TwoStage's stage a."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 5, stride=2)


def test_a_stage_taken_from_another_training_gives_what_training_it_gives(frames, tmp_path):
    _run(frames, tmp_path / "w")  # the base: stages a and b
    torch.manual_seed(1)  # another initialisation: every stage-a weight must come from the base
    method = TwoStage()
    summary = _variant(frames, tmp_path / "v", method, {"a": _finished(tmp_path / "w", "a")})
    assert method.seen == ["b"]  # stage a was not trained
    assert (tmp_path / "v" / "model.pt").read_bytes() == (tmp_path / "w" / "model.pt").read_bytes()
    a = summary["stages"][0]
    assert a["adopted_from"] == str(tmp_path / "w" / "a") and a["iters"] == 6 and summary["iters"] == 6 + 3
    base_ckpt, ckpt = tmp_path / "w" / "a" / "epoch_2.pth", tmp_path / "v" / "a" / "epoch_2.pth"
    assert ckpt.stat().st_ino == base_ckpt.stat().st_ino  # a hard link, not a copy
    history = pd.read_csv(tmp_path / "v" / "history.csv")
    assert history[history["stage"] == "a"].reset_index(drop=True).equals(
        pd.read_csv(tmp_path / "w" / "history.csv").query("stage == 'a'").reset_index(drop=True))


def test_a_later_stage_may_own_other_modules_but_not_another_frozen_part(frames, tmp_path):
    _run(frames, tmp_path / "w")
    given = {"a": _finished(tmp_path / "w", "a")}
    torch.manual_seed(1)
    method = ExtraModule()
    extra = method.extra.weight.detach().clone()
    _variant(frames, tmp_path / "v", method, given)
    end_a = engine.method_state(tmp_path / "w" / "a" / "epoch_2.pth")
    assert torch.equal(method.conv.weight, end_a["conv.weight"])  # frozen in b: the base's stage a
    assert torch.equal(method.extra.weight, extra)  # its own, unused by the loss: as initialised
    with pytest.raises(UserError, match="conv.weight has shape"):
        _variant(frames, tmp_path / "x", OtherConv(), given)
    with pytest.raises(ValueError, match="proper prefix"):
        _variant(frames, tmp_path / "y", TwoStage(), {"b": _finished(tmp_path / "w", "b")})
