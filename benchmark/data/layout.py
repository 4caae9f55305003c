"""The FaceForensics++ directory layout: where each video lives, its label and its split.

Both a real FF++ tree and the generated SynthFF use this layout (docs/CONTRACTS.md):

    root/original_sequences/youtube/<quality>/videos/NNN.mp4
    root/manipulated_sequences/<Folder>/<quality>/videos/TTT_SSS.mp4
    root/splits/{train,val,test}.json      lists of [target, source] pairs

A pair's split holds the real videos of both ids and the fakes TTT_SSS and SSS_TTT.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from benchmark.errors import UserError
from benchmark.registry import DATASETS

QUALITIES = ("raw", "c23", "c40")
SPLITS = ("train", "val", "test")
# manipulation code -> folder name under manipulated_sequences/
FOLDERS = {"DF": "Deepfakes", "F2F": "Face2Face", "FS": "FaceSwap", "NT": "NeuralTextures"}
COLUMNS = ["video_id", "path", "label", "manipulation", "quality", "split"]


def real_dir(root: Path, quality: str) -> Path:
    return Path(root) / "original_sequences" / "youtube" / quality / "videos"


def fake_dir(root: Path, manipulation: str, quality: str) -> Path:
    return Path(root) / "manipulated_sequences" / FOLDERS[manipulation] / quality / "videos"


def read_splits(root) -> dict[str, list[tuple[str, str]]]:
    """The [target, source] pairs of each split, from root/splits/<split>.json."""
    out = {}
    for split in SPLITS:
        path = Path(root) / "splits" / f"{split}.json"
        if not path.is_file():
            raise UserError(f"split file {path} not found; an FF++ tree needs splits/{{train,val,test}}.json")
        try:
            pairs = json.loads(path.read_text())
            out[split] = [(str(t), str(s)) for t, s in pairs]
        except (ValueError, TypeError) as err:
            raise UserError(f"split file {path} is not a JSON list of [target, source] pairs ({err})") from None
    return out


def split_of_ids(pairs: dict[str, list[tuple[str, str]]]) -> tuple[dict[str, str], dict[str, str]]:
    """Maps id -> split for real videos and 'TTT_SSS' -> split for fakes (both orders)."""
    reals, fakes = {}, {}
    for split, plist in pairs.items():
        for t, s in plist:
            reals[t] = reals[s] = split
            fakes[f"{t}_{s}"] = fakes[f"{s}_{t}"] = split
    return reals, fakes


def check_root(root, hint: str = "set datasets.<name>.root to a FaceForensics++ folder") -> Path:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset folder {root} not found; {hint}")
    return root


def list_videos(root, qualities=("c23",), splits=None, manipulations=tuple(FOLDERS)) -> pd.DataFrame:
    """One row per video file present: video_id, path, label, manipulation, quality, split.

    ``splits`` (a name or list of names) keeps only videos of those splits; None keeps all,
    including files named in no split (their split is None). Rows are sorted for determinism.
    """
    root = check_root(root)
    qualities = [qualities] if isinstance(qualities, str) else list(qualities)
    bad = [q for q in qualities if q not in QUALITIES]
    if bad:
        raise UserError(f"unknown quality {bad[0]!r}; choose from {', '.join(QUALITIES)}")
    real_split, fake_split = split_of_ids(read_splits(root))
    rows = []
    for quality in qualities:
        folders = [("real", real_dir(root, quality))] + [(m, fake_dir(root, m, quality)) for m in manipulations]
        found = 0
        for manipulation, folder in folders:
            for path in sorted(folder.glob("*.mp4")):
                name = path.stem
                split = (real_split if manipulation == "real" else fake_split).get(name)
                rows.append((f"{manipulation}/{name}", str(path), int(manipulation != "real"),
                             manipulation, quality, split))
                found += 1
        if not found:
            raise UserError(f"no videos of quality {quality!r} under {root} "
                            f"(expected e.g. {real_dir(root, quality)}/000.mp4)")
    df = pd.DataFrame(rows, columns=COLUMNS)
    if splits is not None:
        splits = [splits] if isinstance(splits, str) else list(splits)
        unknown = [s for s in splits if s not in SPLITS]
        if unknown:
            raise UserError(f"unknown split {unknown[0]!r}; choose from {', '.join(SPLITS)}")
        df = df[df["split"].isin(splits)]
    return df.sort_values(["quality", "manipulation", "video_id"], kind="stable").reset_index(drop=True)


@DATASETS.register_module(name="ffpp")
class FFPP:
    """A real FaceForensics++ tree at ``root`` (downloaded by the user)."""

    hint = "set datasets.<name>.root to your FaceForensics++ folder"

    def __init__(self, root, **_ignored):
        self.root = Path(root)

    def check(self) -> Path:
        return check_root(self.root, self.hint)

    def list_videos(self, qualities=("c23",), splits=None) -> pd.DataFrame:
        self.check()
        return list_videos(self.root, qualities, splits)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"
