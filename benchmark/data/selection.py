"""Which rows of a faces folder's ``manifest.parquet`` a stage reads: a split at a quality, a
train set's manipulations, a quality pair, k frames per video."""
from __future__ import annotations

import pandas as pd

from benchmark.errors import UserError


def split_rows(m: pd.DataFrame, quality: str, split: str, where: str = "manifest.parquet") -> pd.DataFrame:
    """The rows of manifest ``m`` (read from ``where``) at ``quality`` in ``split``."""
    rows = m[(m["quality"] == quality) & (m["split"] == split)]
    if rows.empty:
        raise UserError(f"{where} has no {quality} {split} frames; check extract.qualities in params.yaml")
    return rows


def train_rows(spec: dict, rows: pd.DataFrame, name: str = "") -> pd.DataFrame:
    """The manifest rows a train set keeps: all, or the reals and the fakes of its manipulations."""
    if not spec.get("manipulations"):
        return rows
    rows = rows[(rows["label"] == 0) | rows["manipulation"].isin(spec["manipulations"])]
    if rows["label"].nunique() < 2:
        raise UserError(f"train set {name}: no {'/'.join(spec['manipulations'])} fakes next to reals in "
                        f"data/faces/{spec['dataset']}/manifest.parquet; check the manipulation codes")
    return rows


def pair_rows(m: pd.DataFrame, spec: dict) -> pd.DataFrame | None:
    """Capability quality_pair: the train split's frames of manifest ``m`` at every other quality
    extracted among raw, c23 and c40 (TrainFrames draws one per item; None: none extracted,
    TrainFrames then pairs each frame with a JPEG copy of itself)."""
    rows = m[m["quality"].isin({"raw", "c23", "c40"} - {spec["quality"]}) & (m["split"] == spec["split"])]
    return None if rows.empty else rows


def frames_subset(rows: pd.DataFrame, k: int | None) -> pd.DataFrame:
    """At most ``k`` of each video's extracted frames, spread evenly (a protocol's
    ``frames_per_video``; None keeps all)."""
    if not k:
        return rows
    from benchmark.data.extract import sample_indices
    rows = rows.sort_values(["quality", "video_id", "frame_idx"], kind="mergesort")
    pos = rows.groupby(["quality", "video_id"], sort=False).cumcount().to_numpy()
    size = rows.groupby(["quality", "video_id"], sort=False)["frame_idx"].transform("size").to_numpy()
    keep = [p in sample_indices(n, int(k)) for p, n in zip(pos, size)]
    return rows[keep]
