"""Torch datasets over the face-crop manifest (what the engine and evaluation read).

Crops come from the crop store (``benchmark.data.store``): ``read_crop(faces_dir, row)`` is the
one reader, re-exported here. The datasets copy the manifest columns they need into numpy
arrays once, so an item costs one read, one PNG decode and its augmentation, with no pandas
in the loop (decode and augmentation run in the DataLoader's workers; the default collate
stacks each batch once).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from benchmark.data import store
from benchmark.data.layout import FOLDERS
from benchmark.data.store import read_crop, read_crops  # noqa: F401  (the one crop reader)
from benchmark.errors import UserError
from benchmark.data.jpeg import jpeg


class _Locations:
    """The store locations of a manifest's rows as plain arrays (fast per-item access)."""

    def __init__(self, manifest: pd.DataFrame, faces_dir):
        store.check_manifest(manifest, f"face manifest of {faces_dir}")
        self.faces_dir = str(faces_dir)
        self.cols = {c: manifest[c].to_numpy() for c in store.LOCATION_COLUMNS}

    def read(self, i: int) -> np.ndarray:
        return read_crop(self.faces_dir, {c: v[i] for c, v in self.cols.items()})


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


def crops_tensor(faces_dir, rows: pd.DataFrame) -> torch.Tensor:
    """The crops of manifest ``rows`` as one RGB uint8 tensor (N, 3, H, W)."""
    return torch.from_numpy(read_crops(faces_dir, rows)).permute(0, 3, 1, 2).contiguous()


#: ``manipulation`` ids of the batch (benchmark/method.py): 0 real, then FOLDERS order.
MANIPULATION_IDS = {"real": 0, **{code: i + 1 for i, code in enumerate(FOLDERS)}}
#: quality of the fallback pair when no other quality of a frame was extracted (c40-like).
PAIR_JPEG_RANGE = (13, 29)


def _faces(rows: pd.DataFrame):
    """The ``face`` column (0 where a manifest has none: one face per frame)."""
    return rows["face"].astype(int) if "face" in rows.columns else [0] * len(rows)


class TrainFrames(Dataset):
    """Crops for training. ``augment(img, rng)`` is seeded by (seed, epoch, index),
    so an epoch sees the same augmentation whether or not training was resumed.

    Capabilities a method may ask for (``Method.requires``):

    * ``pair_manifest`` (``quality_pair``): rows of the same frames at other qualities (one or
      several); item ``image_pair`` is the crop of the same ``(video_id, frame_idx, face)`` at one of
      them (in quality order), un-augmented, drawn per item and epoch (seeded by (seed, epoch, index)) when the
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
        self.crops = _Locations(self.rows, faces_dir)
        self.labels = self.rows["label"].to_numpy(np.int64)
        self.pair_index, self.pairs = None, None
        if pair_manifest is not None:
            pm = pair_manifest.reset_index(drop=True)
            if "quality" in pm.columns:  # a frame's counterparts in quality order
                pm = pm.sort_values("quality", kind="stable").reset_index(drop=True)
            self.pairs = _Locations(pm, faces_dir)
            groups: dict = {}
            for i, k in enumerate(zip(pm["video_id"], pm["frame_idx"].astype(int), _faces(pm))):
                groups.setdefault(k, []).append(i)
            keys = zip(self.rows["video_id"], self.rows["frame_idx"].astype(int), _faces(self.rows))
            self.pair_index = [np.array(groups.get(k, ()), np.int64) for k in keys]
        self.manipulation = None
        if manipulation:
            unknown = sorted(set(self.rows["manipulation"]) - set(MANIPULATION_IDS))
            if unknown:
                raise UserError(f"manifest manipulation values {unknown} unknown; expected {sorted(MANIPULATION_IDS)}")
            self.manipulation = self.rows["manipulation"].map(MANIPULATION_IDS).to_numpy()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: int) -> dict:
        clean = self.crops.read(idx)
        img = clean
        if self.augment is not None:
            img = self.augment(clean, np.random.default_rng([self.seed, self.epoch, idx]))
        item = {"image": to_tensor(img), "label": torch.tensor(self.labels[idx])}
        if self.pair_index is not None:
            item["image_pair"] = to_tensor(self._pair(clean, idx))
        if self.manipulation is not None:
            item["manipulation"] = torch.tensor(int(self.manipulation[idx]))
        return item

    def _pair(self, clean: np.ndarray, idx: int) -> np.ndarray:
        choices = self.pair_index[idx]
        rng = np.random.default_rng([self.seed, self.epoch, idx, 1])  # 1: not the augmentation's stream
        if len(choices):
            return self.pairs.read(int(choices[rng.integers(len(choices))]))
        lo, hi = PAIR_JPEG_RANGE
        return jpeg(clean, int(rng.integers(lo, hi + 1)))


class ConditionedFrames(Dataset):
    """Crops for evaluation: each item is the crop under every test condition,
    stacked as (C, 3, H, W), with the condition's parameter (e.g. JPEG quality)."""

    def __init__(self, manifest: pd.DataFrame, faces_dir: Path, conditions, seed: int):
        self.rows = manifest.reset_index(drop=True)
        self.faces_dir, self.conditions, self.seed = Path(faces_dir), conditions, seed
        self.crops = _Locations(self.rows, faces_dir)
        self.keys = [f"{v}/{q}/{int(f)}" for v, q, f in zip(self.rows["video_id"], self.rows["quality"],
                                                             self.rows["frame_idx"])]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: int) -> dict:
        img = self.crops.read(idx)
        key = self.keys[idx]
        outs = [self.conditions.apply(img, c, self.seed, key) for c in range(self.conditions.n_conditions)]
        return {"image": torch.stack([to_tensor(o[0]) for o in outs]),
                "param": torch.tensor([o[1] for o in outs]),
                "index": torch.tensor(idx)}
