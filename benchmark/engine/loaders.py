"""The DataLoaders of training and evaluation, and their worker settings.

Training: a seeded sampler over a ``benchmark.data.frames.TrainFrames``, at the stage's batch
size; params.yaml ``train.sampler`` names it:

* ``uniform``: mmengine's ``DefaultSampler``, every item once per epoch, reshuffled per epoch
  from the seed and, under a launcher, sharded by rank (FF++'s 1 real : 4 fakes reach the model
  as they are);
* ``balanced``: ``BalancedSampler``, as the DPL authors feed their model: every item of the
  larger class once per epoch, each paired with an item of the smaller class drawn at random
  (with replacement), the pairs shuffled, so every batch is half real, half fake (an odd batch
  size leaves one pair split across two batches). An epoch is then 2 x the larger class; under
  a launcher rank r takes pairs r, r + W, ... (padded from the start to a multiple of W).

Both are seeded by (``seed``, epoch) alone (mmengine's ``DistSamplerSeedHook`` calls
``set_epoch`` before every epoch, after a resume too), so a resumed run draws what an
uninterrupted one does. The sampler yields ``(epoch, index)`` (``EpochSampler``) and
``EpochItems`` sets the dataset's epoch from it, so the augmentation of an item, seeded by
(seed, epoch, index), is the same in the main process, in a fresh worker and in a persistent one
(which never sees the main process's copy of the dataset change). The loader draws its workers'
base seed from its own generator, never from torch's global one, which the method's random
draws use.

``loader_options(cfg, device)``: params.yaml ``train``/``evaluate`` keys ``num_workers``,
``pin_memory`` (``auto`` = pinned when the device is CUDA, so batches are copied with
``non_blocking``), ``persistent_workers`` and ``prefetch_factor`` (both only with workers).
Workers run with one torch thread each and are seeded from (seed, rank, worker); nothing an item
holds depends on which worker made it, so results do not depend on the number of workers.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from mmengine.dataset import DefaultSampler
from mmengine.dataset import worker_init_fn as mmengine_worker_init
from torch.utils.data import DataLoader, Dataset, Sampler

from benchmark.engine.distributed import rank, world_size
from benchmark.errors import UserError

SAMPLERS = ("uniform", "balanced")


class BalancedSampler(Sampler):
    """Half real, half fake (module docstring); yields plain indices."""

    def __init__(self, labels, seed: int, rank: int = 0, world_size: int = 1):
        labels = np.asarray(labels).astype(int)
        self.real, self.fake = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
        if not len(self.real) or not len(self.fake):
            raise UserError(f"train.sampler=balanced needs reals and fakes; the train set has "
                            f"{len(self.real)} reals and {len(self.fake)} fakes")
        self.seed, self.epoch, self.rank, self.world = int(seed), 0, int(rank), int(world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return 2 * -(-max(len(self.real), len(self.fake)) // self.world)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        big, small = (self.fake, self.real) if len(self.fake) >= len(self.real) else (self.real, self.fake)
        first = rng.permutation(big)
        partner = small[rng.integers(0, len(small), size=len(big))]
        pairs = np.stack([first, partner], axis=1)
        flip = rng.random(len(pairs)) < 0.5  # which of the two comes first in its pair
        pairs[flip] = pairs[flip][:, ::-1]
        pad = (-len(pairs)) % self.world
        pairs = np.concatenate([pairs, pairs[:pad]])[self.rank::self.world]
        return iter(pairs.reshape(-1).tolist())


class EpochSampler(Sampler):
    """A sampler whose indices carry the epoch: ``(epoch, index)``."""

    def __init__(self, sampler):
        self.sampler = sampler

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        epoch = self.sampler.epoch
        return ((epoch, i) for i in self.sampler)


class EpochItems(Dataset):
    """``dataset[(epoch, index)]`` = ``dataset[index]`` at that epoch."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        self.dataset.epoch = epoch
        return self.dataset[index]


def _worker_init(worker_id: int, num_workers: int, rank: int, seed: int) -> None:
    torch.set_num_threads(1)
    mmengine_worker_init(worker_id, num_workers, rank, seed, disable_subprocess_warning=True)


def loader_options(cfg: dict, device: torch.device, seed: int = 0) -> dict:
    """DataLoader keyword arguments from params.yaml ``train``/``evaluate`` (see the module docstring)."""
    workers = int(cfg.get("num_workers", 0) or 0)
    if workers < 0:
        raise UserError(f"num_workers={workers}: must be 0 (load in the main process) or more")
    pin = cfg.get("pin_memory", "auto")
    if pin not in ("auto", True, False):
        raise UserError(f"pin_memory={pin!r}: choose auto, true or false")
    out = {"num_workers": workers, "pin_memory": torch.device(device).type == "cuda" if pin == "auto" else pin,
           "generator": torch.Generator().manual_seed(int(seed))}
    if workers:
        out.update(persistent_workers=bool(cfg.get("persistent_workers", False)),
                   prefetch_factor=int(cfg.get("prefetch_factor", 2)),
                   worker_init_fn=functools.partial(_worker_init, num_workers=workers, rank=rank(), seed=int(seed)))
    return out


def train_loader(dataset, batch_size: int, cfg: dict, seed: int, device="cpu") -> DataLoader:
    """``cfg`` is params.yaml ``train`` (``sampler`` and the loader keys above)."""
    kind = cfg.get("sampler", "uniform")
    if kind not in SAMPLERS:
        raise UserError(f"train.sampler={kind!r} is unknown; choose one of: {', '.join(SAMPLERS)}")
    sampler = (BalancedSampler(dataset.rows["label"], seed, rank(), world_size()) if kind == "balanced"
               else DefaultSampler(dataset, shuffle=True, seed=seed))
    return DataLoader(EpochItems(dataset), batch_size=int(batch_size), sampler=EpochSampler(sampler),
                      drop_last=False, **loader_options(cfg, device, seed))


def eval_loader(dataset, batch_size: int, cfg: dict, device="cpu") -> DataLoader:
    """Evaluation: every item once, in order; ``cfg`` is params.yaml ``evaluate``."""
    return DataLoader(dataset, batch_size=int(batch_size), shuffle=False, **loader_options(cfg, device))
