"""Reading what a stage's inputs are: a missing, truncated or foreign file is one UserError
naming it and the command that writes it again (``benchmark.io.read_table``/``read_json``)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark import io
from benchmark.errors import UserError
from benchmark.pipeline.graph import faces_dir, indicators_json

SCORE_COLUMNS = ["protocol", "method", "seed", "train_set", "test_set", "quality", "video_id", "frame_idx",
                 "label", "manipulation", "perturbation", "severity", "score"]


def faces_stage(faces: str) -> str:
    """The command that writes ``data/faces/<faces>`` (a distorted folder is ``<dataset>@<code><severity>``)."""
    dataset, at, rest = faces.partition("@")
    if not at:
        return f"`python -m benchmark extract dataset={dataset}`"
    return f"`python -m benchmark distort dataset={dataset} distortion={rest.rstrip('0123456789')} " \
           f"severity={rest[len(rest.rstrip('0123456789')):]}`"


def scores_stage(path: Path) -> str:
    seed = path.stem.rpartition("_seed")[2]
    return f"`python -m benchmark evaluate protocol={path.parent.parent.name} method={path.parent.name} seed={seed}`"


MANIFEST_NEEDS = ["video_id", "frame_idx", "label", "manipulation", "quality", "split", "path"]  # what readers use


def read_manifest(faces: str) -> pd.DataFrame:
    return io.read_table(faces_dir(faces) / "manifest.parquet", faces_stage(faces), MANIFEST_NEEDS)


def manifest(dataset: str, quality: str, split: str) -> pd.DataFrame:
    path = faces_dir(dataset) / "manifest.parquet"
    m = read_manifest(dataset)
    rows = m[(m["quality"] == quality) & (m["split"] == split)]
    if rows.empty:
        raise UserError(f"{path} has no {quality} {split} frames; check extract.qualities in params.yaml")
    return rows


def pair_manifest(spec: dict) -> pd.DataFrame | None:
    """Capability quality_pair: the train split's frames at every other quality extracted among
    raw, c23 and c40 (TrainFrames draws one per item; None: none extracted, TrainFrames then
    pairs each frame with a JPEG copy of itself)."""
    m = read_manifest(spec["dataset"])
    rows = m[m["quality"].isin({"raw", "c23", "c40"} - {spec["quality"]}) & (m["split"] == spec["split"])]
    return None if rows.empty else rows


def indicator(params: dict, dataset: str, device=None):
    from benchmark import indicators as ind
    return ind.load_indicator(indicators_json(dataset), params["indicators"], device=device)  # a missing file is a UserError
