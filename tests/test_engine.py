"""The engine: deterministic on CPU, checkpoints every epoch, resumes exactly."""
import json

import benchmark  # noqa: F401  (torchvision shim)
import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from benchmark import engine, io
from benchmark.data import store
from benchmark.data.frames import TrainFrames
from benchmark.method import Method


class Tiny(Method):
    requires = frozenset({"indicator_levels"})

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.head = nn.Linear(4 + 2, 1)

    def forward(self, batch):
        x = self.conv(self.normalize(batch["image"])).mean((2, 3))
        lv = torch.stack([batch["vqi_level"], batch["fii_level"]], 1).float()
        return {"logit": self.head(torch.cat([x, lv], 1)).squeeze(1)}


def levels(images):
    """A stand-in indicator: brightness bins, so levels depend on the exact image."""
    m = images.float().mean((1, 2, 3))
    return (m // 52 + 1).clamp(1, 5).long(), (5 - m // 52).clamp(1, 5).long()


@pytest.fixture()
def frames(tmp_path):
    rng = np.random.default_rng(0)
    imgs = []
    for i in range(12):
        img = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        img[..., 0] = img[..., 0] // 2 if i % 2 else img[..., 0]
        imgs.append((store.member_name(i), img))
    locations = store.write_shard(tmp_path, store.shard_path("c23", "real/000"), imgs)   # the crop store
    return pd.DataFrame([{**loc, "label": i % 2} for i, loc in enumerate(locations)]), tmp_path


def _jpeg(img, rng):
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(10, 90))])
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


def _run(frames, work, epochs, fingerprint="fp"):
    torch.manual_seed(0)
    method = Tiny()
    ds = TrainFrames(frames[0], frames[1], seed=0, augment=_jpeg)
    cfg = {"epochs": epochs, "batch_size": 4, "optimizer": {"type": "Adam", "lr": 0.01}}
    summary = engine.train(method, ds, work, cfg, seed=0, levels=levels, fingerprint=fingerprint)
    return method.state_dict(), summary


def test_deterministic_and_checkpoints_load_safely(frames, tmp_path):
    a, summary = _run(frames, tmp_path / "a", 2)
    b, _ = _run(frames, tmp_path / "b", 2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert summary["iters"] == 6 and np.isfinite(summary["final_loss"])
    ckpt = tmp_path / "a" / "epoch_2.pth"
    assert ckpt.is_file()  # one checkpoint per epoch, only the last kept
    assert not (tmp_path / "a" / "epoch_1.pth").exists()
    loaded = torch.load(ckpt, weights_only=True)
    assert torch.equal(loaded["state_dict"]["method.head.weight"], a["head.weight"])
    assert torch.equal(io.load_tensors(tmp_path / "a" / "model.pt")["head.weight"], a["head.weight"])


class Interrupt(Exception):
    pass


class Scripted(Tiny):
    """Tiny that calls ``act(self)`` before its ``at``-th optimisation step (a kill, a divergence)."""

    def __init__(self, at, act):
        super().__init__()
        self.at, self.act, self.steps = at, act, 0

    def train_step(self, batch, optim_wrapper):
        self.steps += 1
        if self.steps == self.at:
            self.act(self)
        return super().train_step(batch, optim_wrapper)


def _interrupt(method):
    raise Interrupt


def Stopping(stop_at):  # noqa: N802  (reads like the class it stands for)
    """Tiny interrupted, as by a kill, at its ``stop_at``-th step."""
    return Scripted(stop_at, _interrupt)


def test_resume_after_interruption_is_bit_identical(frames, tmp_path):
    straight, _ = _run(frames, tmp_path / "s", 2)
    torch.manual_seed(0)
    ds = TrainFrames(frames[0], frames[1], seed=0, augment=_jpeg)
    cfg = {"epochs": 2, "batch_size": 4, "optimizer": {"type": "Adam", "lr": 0.01}}
    with pytest.raises(Interrupt):  # killed in epoch 2, after epoch 1's checkpoint
        engine.train(Stopping(stop_at=5), ds, tmp_path / "r", cfg, seed=0, levels=levels, fingerprint="fp")
    partial = engine.partial_dir(tmp_path / "r", "fp")
    assert not (tmp_path / "r").exists() and (partial / "epoch_1.pth").is_file()
    resumed, summary = _run(frames, tmp_path / "r", 2)  # same fingerprint: resumes at epoch 1
    assert summary["iters"] == 6 and not partial.exists()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_changed_configuration_never_resumes(frames, tmp_path):
    _run(frames, tmp_path / "w", 1, fingerprint="one")
    _, summary = _run(frames, tmp_path / "w", 1, fingerprint="two")
    assert summary["iters"] == 3  # trained from scratch, not "already done"
    assert json.loads((tmp_path / "w" / "train.json").read_text())["fingerprint"] == "two"


def test_the_method_owns_its_optimisation_step():
    """MethodModel.train_step runs the method's own train_step (e.g. QAD's weight perturbation)."""
    from mmengine.optim import OptimWrapper

    from benchmark.engine import MethodModel
    from benchmark.method import Method

    class Counting(Method):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.steps = 0

        def forward(self, batch):
            return {"logit": self.w.expand(batch["image"].shape[0])}

        def train_step(self, batch, optim_wrapper):
            self.steps += 1
            return super().train_step(batch, optim_wrapper)

    method = Counting()
    model = MethodModel(method)
    wrapper = OptimWrapper(torch.optim.SGD(method.parameters(), lr=1.0))
    data = {"image": torch.zeros(2, 3, 4, 4, dtype=torch.uint8), "label": torch.tensor([1, 1])}
    log = model.train_step(data, wrapper)
    assert method.steps == 1 and set(log) == {"loss", "bce"}
    assert method.w.item() > 0  # BCE toward label 1 pushed the logit up: the step was taken
