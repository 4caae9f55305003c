"""The DataLoaders of training and evaluation, and their worker settings.

Training: a seeded sampler (mmengine's ``DefaultSampler``, reshuffled per epoch from the seed and,
under a launcher, sharded by rank) over a ``benchmark.data.frames.TrainFrames``, at the stage's
batch size. The sampler yields ``(epoch, index)`` (``EpochSampler``) and ``EpochItems`` sets the
dataset's epoch from it, so the augmentation of an item, seeded by (seed, epoch, index), is the
same in the main process, in a fresh worker and in a persistent one (which never sees the main
process's copy of the dataset change). The loader draws its workers' base seed from its own
generator, never from torch's global one, which the method's random draws use.

``loader_options(cfg, device)``: params.yaml ``train``/``evaluate`` keys ``num_workers``,
``pin_memory`` (``auto`` = pinned when the device is CUDA, so batches are copied with
``non_blocking``), ``persistent_workers`` and ``prefetch_factor`` (both only with workers).
Workers run with one torch thread each and are seeded from (seed, rank, worker); nothing an item
holds depends on which worker made it, so results do not depend on the number of workers.
"""
from __future__ import annotations

import functools

import torch
from mmengine.dataset import DefaultSampler
from mmengine.dataset import worker_init_fn as mmengine_worker_init
from torch.utils.data import DataLoader, Dataset

from benchmark.engine.distributed import rank
from benchmark.errors import UserError


class EpochSampler(DefaultSampler):
    """``DefaultSampler`` whose indices carry the epoch: ``(epoch, index)``."""

    def __iter__(self):
        return ((self.epoch, i) for i in super().__iter__())


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
    """``cfg`` is params.yaml ``train`` (the loader keys above)."""
    return DataLoader(EpochItems(dataset), batch_size=int(batch_size),
                      sampler=EpochSampler(dataset, shuffle=True, seed=seed), drop_last=False,
                      **loader_options(cfg, device, seed))


def eval_loader(dataset, batch_size: int, cfg: dict, device="cpu") -> DataLoader:
    """Evaluation: every item once, in order; ``cfg`` is params.yaml ``evaluate``."""
    return DataLoader(dataset, batch_size=int(batch_size), shuffle=False, **loader_options(cfg, device))
