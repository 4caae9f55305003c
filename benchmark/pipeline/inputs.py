"""Reading what a stage's inputs are: a missing, truncated or foreign file is one UserError
naming it and the command that writes it again (``benchmark.io.read_table``/``read_json``);
which rows a stage keeps is ``benchmark.data.selection``'s."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark import io
from benchmark.data import selection
from benchmark.pipeline.specs import faces_dir, indicators_json

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


def manifest(faces: str, quality: str, split: str) -> pd.DataFrame:
    """The rows of ``data/faces/<faces>/manifest.parquet`` at ``quality`` in ``split``."""
    return selection.split_rows(read_manifest(faces), quality, split, str(faces_dir(faces) / "manifest.parquet"))


def pair_manifest(spec: dict) -> pd.DataFrame | None:
    """Capability quality_pair (``selection.pair_rows``) of a train set's dataset."""
    return selection.pair_rows(read_manifest(spec["dataset"]), spec)


def indicator(params: dict, dataset: str, device=None):
    from benchmark import indicators as ind
    return ind.load_indicator(indicators_json(dataset), params["indicators"], device=device)  # a missing file is a UserError
