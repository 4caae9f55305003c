"""Torch datasets over the face-crop manifest (what the engine and evaluation read)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from benchmark.data.layout import FOLDERS
from benchmark.errors import UserError
from benchmark.data.jpeg import jpeg


def read_crop(path: Path) -> np.ndarray:
    """A stored face crop as RGB uint8 (H, W, 3)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise UserError(f"face crop {path} missing or unreadable; re-run the `extract` stage")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


#: ``manipulation`` ids of the batch (benchmark/method.py): 0 real, then FOLDERS order.
MANIPULATION_IDS = {"real": 0, **{code: i + 1 for i, code in enumerate(FOLDERS)}}
#: quality of the fallback pair when no other quality of a frame was extracted (c40-like).
PAIR_JPEG_RANGE = (13, 29)


class TrainFrames(Dataset):
    """Crops for training. ``augment(img, rng)`` is seeded by (seed, epoch, index),
    so an epoch sees the same augmentation whether or not training was resumed.

    Capabilities a method may ask for (``Method.requires``):

    * ``pair_manifest`` (``quality_pair``): rows of the same frames at other qualities (one or
      several); item ``image_pair`` is the crop of the same ``(video_id, frame_idx)`` at one of
      them, un-augmented, drawn per item and epoch (seeded by (seed, epoch, index)) when the
      frame has several. A frame without a counterpart is paired with a JPEG copy of its own
      (clean) crop at a quality drawn from ``PAIR_JPEG_RANGE``, seeded the same way.
    * ``manipulation=True`` (``manipulation_label``): item ``manipulation``, int64 in
      ``MANIPULATION_IDS``.
    """

    def __init__(self, manifest: pd.DataFrame, faces_dir: Path, seed: int,
                 augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
                 pair_manifest: pd.DataFrame | None = None, manipulation: bool = False):
        self.rows = manifest.reset_index(drop=True)
        self.faces_dir = Path(faces_dir)
        self.seed, self.augment, self.epoch = seed, augment, 0
        self.pair_paths = None
        if pair_manifest is not None:
            lookup: dict = {}
            for v, f, p in pair_manifest.sort_values("path")[["video_id", "frame_idx", "path"]].itertuples(index=False):
                lookup.setdefault((v, int(f)), []).append(p)
            self.pair_paths = [lookup.get((v, int(f)), []) for v, f in self.rows[["video_id", "frame_idx"]].itertuples(index=False)]
        self.manipulation = None
        if manipulation:
            unknown = sorted(set(self.rows["manipulation"]) - set(MANIPULATION_IDS))
            if unknown:
                raise UserError(f"manifest manipulation values {unknown} unknown; expected {sorted(MANIPULATION_IDS)}")
            self.manipulation = self.rows["manipulation"].map(MANIPULATION_IDS).to_numpy()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: int) -> dict:
        row = self.rows.iloc[idx]
        clean = read_crop(self.faces_dir / row.path)
        img = clean
        if self.augment is not None:
            img = self.augment(clean, np.random.default_rng([self.seed, self.epoch, idx]))
        item = {"image": to_tensor(img), "label": torch.tensor(int(row.label))}
        if self.pair_paths is not None:
            item["image_pair"] = to_tensor(self._pair(clean, idx))
        if self.manipulation is not None:
            item["manipulation"] = torch.tensor(int(self.manipulation[idx]))
        return item

    def _pair(self, clean: np.ndarray, idx: int) -> np.ndarray:
        paths = self.pair_paths[idx]
        rng = np.random.default_rng([self.seed, self.epoch, idx, 1])  # 1: not the augmentation's stream
        if paths:
            return read_crop(self.faces_dir / paths[int(rng.integers(len(paths)))])
        lo, hi = PAIR_JPEG_RANGE
        return jpeg(clean, int(rng.integers(lo, hi + 1)))


class ConditionedFrames(Dataset):
    """Crops for evaluation: each item is the crop under every test condition,
    stacked as (C, 3, H, W), with the condition's parameter (e.g. JPEG quality)."""

    def __init__(self, manifest: pd.DataFrame, faces_dir: Path, conditions, seed: int):
        self.rows = manifest.reset_index(drop=True)
        self.faces_dir, self.conditions, self.seed = Path(faces_dir), conditions, seed

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: int) -> dict:
        row = self.rows.iloc[idx]
        img = read_crop(self.faces_dir / row.path)
        key = f"{row.video_id}/{row.quality}/{row.frame_idx}"
        outs = [self.conditions.apply(img, c, self.seed, key) for c in range(self.conditions.n_conditions)]
        return {"image": torch.stack([to_tensor(o[0]) for o in outs]),
                "param": torch.tensor([o[1] for o in outs]),
                "index": torch.tensor(idx)}
