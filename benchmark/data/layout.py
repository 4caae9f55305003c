"""The FaceForensics++ directory layout: where each video lives, its label and its split.

Both a real FF++ tree and the generated SynthFF use this layout (docs/CONTRACTS.md):

    root/original_sequences/youtube/<quality>/videos/NNN.mp4
    root/manipulated_sequences/<Folder>/<quality>/videos/TTT_SSS.mp4
    root/splits/{train,val,test}.json      lists of [target, source] pairs

A pair's split holds the real videos of both ids and the fakes TTT_SSS and SSS_TTT.
FaceShifter (code FSH) is the FF++ ``FaceShifter`` folder with the same splits; a dataset
entry with ``manipulations: [FSH]`` makes it a test set of its own (DESIGN §5).

Paths stay inside the dataset root: a split-file id that is not a plain name (``..``, a ``/``,
an absolute path) and a video whose real path leaves the root (a symlink out of it) are
refused with one line (``plain_id``, ``inside``), so a list can never make the harness read,
or name outputs after, files elsewhere.

Completeness: every (quality, folder) listed is checked against the videos the split files
expect (2 reals per pair; fakes TTT_SSS and SSS_TTT per pair). A missing or partial folder is
a UserError naming the folder and the counts, unless ``allow_partial`` is set: then the
shortfall is kept in ``dataset.partial`` (extraction writes it to extract_report.json and the
report says so).
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
FOLDERS = {"DF": "Deepfakes", "F2F": "Face2Face", "FS": "FaceSwap", "NT": "NeuralTextures",
           "FSH": "FaceShifter"}
DEFAULT_MANIPULATIONS = ("DF", "F2F", "FS", "NT")   # FF++ proper; FSH is its own test set
COLUMNS = ["video_id", "path", "label", "manipulation", "quality", "split"]


def real_dir(root: Path, quality: str) -> Path:
    return Path(root) / "original_sequences" / "youtube" / quality / "videos"


def fake_dir(root: Path, manipulation: str, quality: str, folders: dict = FOLDERS) -> Path:
    return Path(root) / "manipulated_sequences" / folders[manipulation] / quality / "videos"


def read_splits(root) -> dict[str, list[tuple[str, str]]]:
    """The [target, source] pairs of each split, from root/splits/<split>.json."""
    out = {}
    for split in SPLITS:
        path = Path(root) / "splits" / f"{split}.json"
        if not path.is_file():
            raise UserError(f"split file {path} not found; an FF++ tree needs splits/{{train,val,test}}.json")
        try:
            pairs = json.loads(path.read_text())
            if not isinstance(pairs, list):
                raise TypeError(f"top level is {type(pairs).__name__}")
            out[split] = [(str(t), str(s)) for t, s in pairs]
        except (ValueError, TypeError) as err:
            raise UserError(f"split file {path} is not a JSON list of [target, source] pairs ({err})") from None
        for i, pair in enumerate(out[split]):
            for vid in pair:
                plain_id(vid, f"split file {path}, pair {i}")
    return out


def plain_id(name: str, where: str) -> str:
    """``name`` if it is a plain file name (no ``..``, no separator, not absolute), else UserError."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or Path(name).is_absolute():
        raise UserError(f"{where}: {name!r} is not a plain video id; ids name files inside the dataset root "
                        f"('..', '/' and absolute paths are refused)")
    return name


def inside(root, path, where: str) -> Path:
    """``path`` if its real location (symlinks followed) is inside ``root``'s, else UserError."""
    real_root, real = Path(root).resolve(), Path(path).resolve()
    if not real.is_relative_to(real_root):
        raise UserError(f"{where}: {path} leads to {real}, outside the dataset root {real_root}; move or copy "
                        f"the file into the root (paths and symlinks that leave it are refused)")
    return Path(path)


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


def list_videos(root, qualities=("c23",), splits=None, manipulations=DEFAULT_MANIPULATIONS,
                folders: dict = FOLDERS, allow_partial: bool = True) -> pd.DataFrame:
    """One row per video file present: video_id, path, label, manipulation, quality, split.

    ``splits`` (a name or list of names) keeps only videos of those splits; None keeps all,
    including files named in no split (their split is None). Rows are sorted for determinism.
    With ``allow_partial`` False a folder holding fewer videos than the splits expect is a
    UserError (see the module docstring); ``check_complete`` gives the shortfalls.
    """
    root = check_root(root)
    qualities = _qualities(qualities)
    pairs = read_splits(root)
    real_split, fake_split = split_of_ids(pairs)
    unknown = [m for m in manipulations if m not in folders]
    if unknown:
        raise UserError(f"unknown manipulation {unknown[0]!r}; choose from {', '.join(folders)}")
    rows = []
    for quality in qualities:
        dirs = [("real", real_dir(root, quality))] + [(m, fake_dir(root, m, quality, folders)) for m in manipulations]
        found = 0
        for manipulation, folder in dirs:
            for path in sorted(folder.glob("*.mp4")):
                inside(root, path, "dataset video")
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
        bad = [s for s in splits if s not in SPLITS]
        if bad:
            raise UserError(f"unknown split {bad[0]!r}; choose from {', '.join(SPLITS)}")
        df = df[df["split"].isin(splits)]
    if not allow_partial:
        raise_if_partial(check_complete(root, qualities, splits, manipulations, folders, pairs))
    return df.sort_values(["quality", "manipulation", "video_id"], kind="stable").reset_index(drop=True)


def _qualities(qualities) -> list[str]:
    qualities = [qualities] if isinstance(qualities, str) else list(qualities)
    bad = [q for q in qualities if q not in QUALITIES]
    if bad:
        raise UserError(f"unknown quality {bad[0]!r}; choose from {', '.join(QUALITIES)}")
    return qualities


def check_complete(root, qualities, splits=None, manipulations=DEFAULT_MANIPULATIONS,
                   folders: dict = FOLDERS, pairs=None) -> list[dict]:
    """The folders holding fewer videos than the split files expect: [{folder, found, expected}]."""
    pairs = read_splits(root) if pairs is None else pairs
    keep = SPLITS if splits is None else ([splits] if isinstance(splits, str) else splits)
    reals = {x for s in keep for pair in pairs[s] for x in pair}
    fakes = {n for s in keep for t, u in pairs[s] for n in (f"{t}_{u}", f"{u}_{t}")}
    out = []
    for quality in _qualities(qualities):
        dirs = [(real_dir(root, quality), reals)] + [(fake_dir(root, m, quality, folders), fakes) for m in manipulations]
        for folder, want in dirs:
            have = {p.stem for p in folder.glob("*.mp4")} & want
            if len(have) < len(want):
                out.append({"folder": str(folder), "found": len(have), "expected": len(want)})
    return out


def raise_if_partial(partial: list[dict], what: str = "the split files expect") -> None:
    """One UserError for the first incomplete folder (and how many more there are)."""
    if partial:
        p, more = partial[0], len(partial) - 1
        raise UserError(f"dataset folder {p['folder']} has {p['found']} of the {p['expected']} videos "
                        f"{what}" + (f" ({more} more folders incomplete)" if more else "")
                        + "; add the missing videos, or set allow_partial: true under this dataset "
                          "in params.yaml (datasets.<id>) to run on what is there")


def partial_note(partial: list[dict]) -> str:
    """The line the report shows for a dataset run with allow_partial on an incomplete tree."""
    found, expected = sum(p["found"] for p in partial), sum(p["expected"] for p in partial)
    return (f"PARTIAL dataset (allow_partial): {found} of {expected} expected videos in "
            f"{len(partial)} incomplete folder(s), e.g. {partial[0]['folder']} "
            f"({partial[0]['found']} of {partial[0]['expected']})")


@DATASETS.register_module(name="ffpp")
class FFPP:
    """A real FaceForensics++ tree at ``root`` (downloaded by the user).

    ``manipulations``: the manipulation codes it serves (default DF F2F FS NT; ``[FSH]`` for
    the FaceShifter test set); ``allow_partial``: run on an incomplete tree (module docstring).
    """

    synthetic = False  # generated by the harness (has ``synthesize``) rather than downloaded
    folders = FOLDERS
    hint = "set datasets.<name>.root to your FaceForensics++ folder"

    def __init__(self, root, manipulations=None, allow_partial: bool = False, **_ignored):
        self.root = Path(root)
        self.manipulations = tuple(manipulations or DEFAULT_MANIPULATIONS)
        self.allow_partial = bool(allow_partial)
        self.partial: list[dict] = []   # filled by list_videos when allow_partial lets a shortfall pass

    def check(self) -> Path:
        return check_root(self.root, self.hint)

    def list_videos(self, qualities=("c23",), splits=None) -> pd.DataFrame:
        self.check()
        self.partial = check_complete(self.root, qualities, splits, self.manipulations, self.folders)
        if not self.allow_partial:
            raise_if_partial(self.partial)
        return list_videos(self.root, qualities, splits, self.manipulations, self.folders)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"
