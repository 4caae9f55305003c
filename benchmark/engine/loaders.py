"""The training DataLoader over a ``benchmark.data.frames.TrainFrames``, at the stage's batch
size, with the sampler params.yaml ``train.sampler`` names:

* ``uniform``: mmengine's ``DefaultSampler``, every item once per epoch, reshuffled per epoch
  from the seed (FF++'s 1 real : 4 fakes reach the model as they are);
* ``balanced``: ``BalancedSampler``, as the DPL authors feed their model: every item of the
  larger class once per epoch, each paired with an item of the smaller class drawn at random
  (with replacement), the pairs shuffled, so every batch is half real, half fake (an odd batch
  size leaves one pair split across two batches). An epoch is then 2 × the larger class.

Both are seeded by (``seed``, epoch) alone (mmengine's ``DistSamplerSeedHook`` calls
``set_epoch`` before every epoch, after a resume too), so a resumed run draws what an
uninterrupted one does.
"""
from __future__ import annotations

import numpy as np
from mmengine.dataset import DefaultSampler
from torch.utils.data import DataLoader, Sampler

from benchmark.errors import UserError

SAMPLERS = ("uniform", "balanced")


class BalancedSampler(Sampler):
    def __init__(self, labels, seed: int):
        labels = np.asarray(labels).astype(int)
        self.real, self.fake = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
        if not len(self.real) or not len(self.fake):
            raise UserError(f"train.sampler=balanced needs reals and fakes; the train set has "
                            f"{len(self.real)} reals and {len(self.fake)} fakes")
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return 2 * max(len(self.real), len(self.fake))

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        big, small = (self.fake, self.real) if len(self.fake) >= len(self.real) else (self.real, self.fake)
        first = rng.permutation(big)
        partner = small[rng.integers(0, len(small), size=len(big))]
        pairs = np.stack([first, partner], axis=1)
        flip = rng.random(len(pairs)) < 0.5  # which of the two comes first in its pair
        pairs[flip] = pairs[flip][:, ::-1]
        return iter(pairs.reshape(-1).tolist())


def train_loader(dataset, batch_size: int, cfg: dict, seed: int) -> DataLoader:
    """``cfg`` is params.yaml ``train`` (``sampler``, ``num_workers``)."""
    kind = cfg.get("sampler", "uniform")
    if kind not in SAMPLERS:
        raise UserError(f"train.sampler={kind!r} is unknown; choose one of: {', '.join(SAMPLERS)}")
    sampler = (BalancedSampler(dataset.rows["label"], seed) if kind == "balanced"
               else DefaultSampler(dataset, shuffle=True, seed=seed))
    return DataLoader(dataset, batch_size=int(batch_size), num_workers=int(cfg.get("num_workers", 0)),
                      sampler=sampler, drop_last=False)
