"""Batch composition: every training image in all four JPEG versions in the same step.

The authors' release trains on each image as it is and JPEG-compressed at a quality drawn from
each of the ranges 30-99, 13-29 and 8-12, all four in the same batch; the default
(``train.views: single``) shows each image once, randomly one of those four versions
(``benchmark.data.jpeg.RandomJPEG``, ``train.jpeg_aug``).

``JPEGViews(frames)`` wraps any training dataset that follows ``TrainFrames``' item contract
(``image`` uint8 (3, H, W), ``label``, optional ``image_pair``/``manipulation``) and was built
*without* augmentation: its item ``image`` becomes (4, 3, H, W) = [as is, q1, q2, q3], one
quality per range, seeded by (seed, epoch, index) as ``TrainFrames`` seeds its augmentation,
so a resumed epoch sees the same qualities. The engine's preprocessor flattens the views into
the batch (``benchmark.engine.model.flatten_views``): ``train.batch_size`` counts source
images, a step sees four times as many crops. ``seed`` and ``epoch`` are passed through to the
wrapped dataset (the engine sets both).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from benchmark.data.jpeg import JPEG_RANGES, jpeg
from benchmark.errors import UserError

VIEWS = ("single", "all_jpeg")
_STREAM = 2  # the views' random stream, apart from TrainFrames' augmentation (none) and pair (1) streams


class JPEGViews(Dataset):
    def __init__(self, frames: Dataset, ranges=JPEG_RANGES):
        self.frames, self.ranges = frames, tuple(ranges)

    def __len__(self) -> int:
        return len(self.frames)

    seed = property(lambda self: self.frames.seed, lambda self, v: setattr(self.frames, "seed", v))
    epoch = property(lambda self: self.frames.epoch, lambda self, v: setattr(self.frames, "epoch", v))
    rows = property(lambda self: self.frames.rows)  # the frames' labels (train.sampler: balanced reads them)

    def qualities(self, idx: int) -> list[int]:
        """The JPEG quality of views 1..3 of item ``idx`` in the current epoch."""
        rng = np.random.default_rng([self.seed, self.epoch, idx, _STREAM])
        return [int(rng.integers(lo, hi + 1)) for lo, hi in self.ranges]

    def __getitem__(self, idx: int) -> dict:
        item = dict(self.frames[idx])
        img = item["image"]
        item["image"] = torch.stack([img, *(jpeg(img, q) for q in self.qualities(idx))])
        return item


def compose(frames: Dataset, views: str) -> Dataset:
    """``frames`` as the batch composition ``views`` (params.yaml ``train.views``) asks."""
    if views not in VIEWS:
        raise UserError(f"train.views={views!r} is unknown; choose one of: {', '.join(VIEWS)}")
    return JPEGViews(frames) if views == "all_jpeg" else frames
