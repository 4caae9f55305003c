"""Training cases shared by tests/test_ddp.py (one process, in pytest) and its ``torchrun`` run
(two processes: ``python -m torch.distributed.run --nproc_per_node=2 tests/_ddp_cases.py DATA OUT``).

Each case trains a method through ``benchmark.engine.train`` on the same tiny crops, with the same
global batch, on the CPU; the two-process run uses ``launcher=pytorch`` (gloo). The backbone is
timm's ``test_convnext`` (LayerNorm, no BatchNorm): a BatchNorm over a local batch of 4 would
normalise with other statistics than over the global batch of 8 (SyncBatchNorm, ``train.sync_bn``,
makes them global on CUDA but does not run on the CPU), so with BN the comparison could not be
exact here.

QAD's kernel regulariser (HKR) is the normalised HSIC of the *batch* (kernel matrices between its
samples): on each rank it is the local batch's, which no mean over ranks turns into the global
batch's (as with BatchNorm). The QAD case sets ``alpha_hkr: 0`` and keeps what makes its step its
own: the adversarial weight perturbation (``awp_gamma`` 0.01 from the first step).

DPL draws its FSM window starts (stage I: ``torch.randint``; stage II: ``torch.normal``) from
torch's global generator, one draw per position in the batch: a process with half the batch
draws other numbers than one process with the whole batch, whatever the seeds. ``sharded_draws``
replaces the generator behind those two calls (in ``methods._dpl_parts`` only) by one generator
per call that every rank seeds alike, drawing for the *global* batch, of which each rank keeps
its own samples (rank r holds global positions r, r + W, ... -- mmengine's sampler interleave).
The draws stay random; the methods' steps are untouched.

Every process records, through a Python audit hook, the files it opened for writing and the
renames/removals it made; rank r writes that list to ``OUT/writes_rank<r>.json``.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
from pathlib import Path

import benchmark  # noqa: F401  (torchvision shim before timm)
import numpy as np
import pandas as pd
import torch

from benchmark import engine, registry
from benchmark.data import store
from benchmark.data.frames import TrainFrames

N_IMAGES, SIZE, GLOBAL_BATCH = 16, 32, 8
CFG = {"epochs": 2, "batch_size": GLOBAL_BATCH, "optimizer": {"type": "Adam", "lr": 1e-3}}
CASES = {
    "baseline": {"backbone": "test_convnext"},
    "qad": {"backbone": "test_convnext", "hkr_weights": [0.1, 0.25, 0.5, 0.0, 0.0], "alpha_hkr": 0.0, "awp_gamma": 0.01,
            "awp_warmup_epochs": 0},
    "dpl": {"backbone": "test_convnext", "reading": "paper", "hidden": 16, "policy_hidden": 8, "stage2_epochs": 1,
            "ppo_epochs": 2},
    # the release reading: L_REG over the global batch's hard samples, returns standardised and
    # PPO terms averaged over the global batch. Stage II from the last stage-I epoch (the release's
    # best-validation epoch needs val frames these cases do not pass); one view per image and
    # uniform batches, because the draws above are sharded by item as the uniform sampler shards
    # (balanced pairs and flattened views order a rank's items otherwise)
    "dpl_release": {"method": "dpl", "backbone": "test_convnext", "reading": "release", "hidden": 16,
                    "policy_hidden": 8, "stage2_epochs": 1, "stage1_checkpoint": "last", "views": "single",
                    "sampler": "uniform"},
}
EPOCHS = {"baseline": 2, "qad": 1, "dpl": 1, "dpl_release": 1}  # DPL: one stage-I epoch, then its stage II


def build(name: str, **options):
    """The case's method, built as the cases' runs build it (seed 0)."""
    opts = {**CASES[name], **options}
    return registry.get(registry.METHODS, opts.pop("method", name))(**opts)


def make_crops(root: Path) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(N_IMAGES):
        img = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
        if i % 2:
            img[..., 0] //= 2
        loc, = store.write_shard(root, store.shard_path("c23", f"v{i}"), [(store.member_name(0), img)])
        rows.append({**loc, "label": i % 2, "video_id": f"v{i}", "frame_idx": 0, "manipulation": "real"})
    return pd.DataFrame(rows)


def levels(images: torch.Tensor):
    """A stand-in indicator: brightness bins (exact on uint8 sums), levels 1..5."""
    m = images.float().mean((1, 2, 3))
    return (m // 52 + 1).clamp(1, 5).long(), (5 - m // 52).clamp(1, 5).long()


class _ShardedTorch:
    """``torch`` for methods._dpl_parts, with randint/normal drawn for the global batch (see above)."""

    def __init__(self):
        self.calls = itertools.count()

    def __getattr__(self, name):
        return getattr(torch, name)

    def _shard(self, full: torch.Tensor) -> torch.Tensor:
        rank, world = engine.distributed.rank(), engine.distributed.world_size()
        return full[rank::world]

    def randint(self, high, size, generator=None, device=None):
        if generator is not None:  # eval mode's own seeded generator: unchanged
            return torch.randint(high, size, generator=generator, device=device)
        g = torch.Generator().manual_seed(next(self.calls))
        n = size[0] * engine.distributed.world_size()
        return self._shard(torch.randint(high, (n,), generator=g)).to(device)

    def normal(self, mean, std):
        g = torch.Generator().manual_seed(next(self.calls))
        z = torch.randn(mean.shape[0] * engine.distributed.world_size(), generator=g)
        return mean + std * self._shard(z).to(mean.device)


@contextlib.contextmanager
def sharded_draws():
    import methods._dpl_parts as parts
    parts.torch = _ShardedTorch()
    try:
        yield
    finally:
        parts.torch = torch


def train_case(name: str, crops: pd.DataFrame, faces: Path, work: Path, launcher: str = "none", **options) -> dict:
    from benchmark.data.views import compose
    registry.load_all()
    torch.manual_seed(0)
    method = build(name, **options)
    cfg = {**CFG, "epochs": EPOCHS[name], **method.train_options()}  # as pipeline.stages.train does
    data = TrainFrames(crops, faces, seed=0, pair_manifest=None if "quality_pair" not in method.requires else crops.iloc[:0])
    engine.train(method, compose(data, cfg.get("views", "single")), work, cfg, seed=0, levels=levels,
                 fingerprint=name, device="cpu", launcher=launcher)
    return {k: v.clone() for k, v in method.state_dict().items()}


def _audit(root: str, log: list):
    def hook(event, args):
        if event == "open" and isinstance(args[0], (str, os.PathLike)) and args[1] and set(str(args[1])) & set("wax+"):
            path = os.path.abspath(args[0])
        elif event in ("os.rename", "os.remove", "shutil.rmtree") and isinstance(args[0], (str, os.PathLike)):
            path = os.path.abspath(args[0])
        else:
            return
        if path.startswith(root):
            log.append([event, path])
    return hook


def main(data: str, out: str) -> None:
    torch.set_num_threads(1)
    writes: list = []
    sys.addaudithook(_audit(os.path.abspath(out), writes))
    crops = pd.read_parquet(Path(data) / "crops.parquet")
    with sharded_draws():
        for name in CASES:
            train_case(name, crops, Path(data), Path(out) / name, launcher="pytorch")
    rank = engine.distributed.rank()
    (Path(data) / f"writes_rank{rank}.json").write_text(json.dumps(writes))


if __name__ == "__main__":
    main(*sys.argv[1:3])
