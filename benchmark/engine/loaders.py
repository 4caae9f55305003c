"""The training DataLoader: a seeded sampler (mmengine's ``DefaultSampler``, reshuffled per
epoch from the seed) over a ``benchmark.data.frames.TrainFrames``, at the stage's batch size."""
from __future__ import annotations

from mmengine.dataset import DefaultSampler
from torch.utils.data import DataLoader


def train_loader(dataset, batch_size: int, cfg: dict, seed: int) -> DataLoader:
    """``cfg`` is params.yaml ``train`` (``num_workers``)."""
    return DataLoader(dataset, batch_size=int(batch_size), num_workers=int(cfg.get("num_workers", 0)),
                      sampler=DefaultSampler(dataset, shuffle=True, seed=seed), drop_last=False)
