"""Indicator scores at evaluation, computed once per test set and condition, reused by every method.

The VQI/FII scores of a conditioned test image do not depend on the method being evaluated, and
the CLIP pass costs about as much as ConvNeXt-T's forward; so ``evaluation.score`` asks this cache
first. An entry is the scores of one (test crops, conditions) table in the order ``score`` visits
them (manifest row, then condition), stored as ``<dir>/<key>.parquet`` (columns vqi, fii,
float64, so a hit gives the very floats a recomputation would). The key hashes everything the
scores depend on, so any change recomputes instead of reusing:

* the backend: its ``describe()`` (backend, model, weights, logit scale, prompts), the source of
  its module, the size and modification time of a local weights file, and the versions of
  open_clip and torch;
* the condition set: its class, its attributes (e.g. the JPEG ranges), the evaluation seed, and
  the source of its module and of the JPEG codec (``benchmark.data.jpeg``) with OpenCV's version;
* the crops: video_id, quality, frame_idx, face and the CRC-32 of every crop, in order.

Level edges are not part of an entry: levels are binned from the cached scores at each use.
Writes are atomic (``benchmark.io``), so concurrent evaluations of two methods never see half an
entry; a damaged entry is dropped and recomputed.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark import io


def _source(obj) -> bytes:
    try:
        return Path(inspect.getsourcefile(obj)).read_bytes()
    except (TypeError, OSError):
        return b""


def _versions() -> dict:
    import cv2
    import torch
    out = {"torch": torch.__version__, "cv2": cv2.__version__}
    if "open_clip" in sys.modules:
        out["open_clip"] = getattr(sys.modules["open_clip"], "__version__", "")
    return out


def _weights_stamp(weights) -> list:
    if isinstance(weights, str) and os.path.isfile(weights):
        st = os.stat(weights)
        return [st.st_size, st.st_mtime_ns]
    return []


def key(indicator, conditions, seed: int, manifest: pd.DataFrame) -> str:
    """The content key of the indicator scores of ``manifest``'s crops under ``conditions``."""
    from benchmark.data import jpeg
    backend = getattr(indicator, "backend", indicator)
    desc = backend.describe()
    h = hashlib.sha256()
    h.update(json.dumps({"backend": desc, "weights_file": _weights_stamp(desc.get("weights")),
                         "conditions": [type(conditions).__name__, vars(conditions)], "seed": int(seed),
                         "versions": _versions()}, sort_keys=True, default=str).encode())
    for code in (inspect.getmodule(type(backend)), inspect.getmodule(type(conditions)), jpeg):
        h.update(_source(code))
    cols = [c for c in ("video_id", "quality", "frame_idx", "face", "crc32") if c in manifest.columns]
    h.update(pd.util.hash_pandas_object(manifest[cols].reset_index(drop=True), index=False).to_numpy().tobytes())
    return h.hexdigest()[:24]


class IndicatorCache:
    """``<directory>/<key>.parquet`` entries; counts the images served from it (``hits``) and
    scored afresh (``misses``)."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.hits = self.misses = 0

    def path(self, k: str) -> Path:
        return self.directory / f"{k}.parquet"

    def load(self, k: str, n: int) -> dict | None:
        """The entry ``k`` as {vqi, fii} arrays of length ``n``, or None (absent or damaged)."""
        p = self.path(k)
        if not p.is_file():
            return None
        try:
            df = pd.read_parquet(p)
            out = {c: df[c].to_numpy(np.float64) for c in ("vqi", "fii")}
        except Exception:  # noqa: BLE001 - a damaged entry is recomputed, never trusted
            return None
        return out if len(df) == n else None

    def save(self, k: str, scores: dict) -> None:
        io.write_parquet(self.path(k), pd.DataFrame({c: np.asarray(scores[c], np.float64) for c in ("vqi", "fii")}))

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else float("nan")
