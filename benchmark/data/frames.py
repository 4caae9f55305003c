"""Torch datasets over the face-crop manifest (what the engine and evaluation read)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from benchmark.errors import UserError


def read_crop(path: Path) -> np.ndarray:
    """A stored face crop as RGB uint8 (H, W, 3)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise UserError(f"face crop {path} missing or unreadable; re-run the `extract` stage")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


class TrainFrames(Dataset):
    """Crops for training. ``augment(img, rng)`` is seeded by (seed, epoch, index),
    so an epoch sees the same augmentation whether or not training was resumed."""

    def __init__(self, manifest: pd.DataFrame, faces_dir: Path, seed: int,
                 augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None):
        self.rows = manifest.reset_index(drop=True)
        self.faces_dir = Path(faces_dir)
        self.seed, self.augment, self.epoch = seed, augment, 0

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: int) -> dict:
        row = self.rows.iloc[idx]
        img = read_crop(self.faces_dir / row.path)
        if self.augment is not None:
            img = self.augment(img, np.random.default_rng([self.seed, self.epoch, idx]))
        return {"image": to_tensor(img), "label": torch.tensor(int(row.label))}


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
