"""Adapters for the cross-dataset test sets that are not in the FF++ layout (DESIGN §5).

Both list their videos in the columns of ``layout.COLUMNS`` (video_id, path, label,
manipulation, quality, split), so extraction, evaluation and metrics treat them like FF++:

- ``celebdf`` (Celeb-DF v2): ``root/{Celeb-real,YouTube-real,Celeb-synthesis}/*.mp4`` and
  ``root/List_of_testing_videos.txt``, 518 lines ``<label> <folder>/<name>.mp4`` where, in
  Celeb-DF's own convention, 1 = real and 0 = synthesised (the harness's label is the
  opposite: 1 = fake). Only the listed (test) videos are used; a label that contradicts the
  folder (fakes live in Celeb-synthesis) is refused. Fakes get manipulation ``CDF``.
- ``ffiw`` (FFIW10K): ``root/source/<split>/*.mp4`` (real) and ``root/target/<split>/*.mp4``
  (manipulated; same file names as their sources), split ``test`` by default. Expected
  videos: the names found in either folder, in both. Fakes get manipulation ``FFIW``.
  Deviation: FFIW10K videos show several faces; ``datasets.<id>.faces`` picks which are
  extracted (``track``: the identity that continues through the video, ``largest`` per frame,
  ``all``: every track as its own ``face``), and every face gets its video's label: FFIW10K's
  face-level labels are not read (their annotation files were not available to build against),
  so a fake video's real faces are scored as fake under ``all``, and under ``track`` a fake is
  scored on a real face when the tracked one is not the manipulated one.

Each is released in one compression, which the harness files under the quality name
``quality`` (default ``c23``: the protocols test them as c23). ``list_videos`` returns rows
only when that quality is asked for. A missing or partial tree is one UserError naming the
folder and the counts, unless ``allow_partial`` (then ``partial`` holds the shortfall). A list
entry with ``..`` or an absolute path, and a video whose real path leaves the root (a symlink
out of it), are refused with one line (``layout.plain_id``, ``layout.inside``).
"""
from __future__ import annotations

import abc
from pathlib import Path

import pandas as pd

from benchmark.data.layout import COLUMNS, check_root, inside, plain_id, raise_if_partial
from benchmark.errors import UserError
from benchmark.registry import DATASETS


class _OneQuality(abc.ABC):
    synthetic = False
    hint = "set datasets.<name>.root in params.yaml"

    def __init__(self, root, quality: str = "c23", allow_partial: bool = False, **_ignored):
        self.root, self.quality, self.allow_partial = Path(root), str(quality), bool(allow_partial)
        self.partial: list[dict] = []

    def check(self) -> Path:
        return check_root(self.root, self.hint)

    @abc.abstractmethod
    def expected(self) -> list[tuple[str, Path, int, str, str]]:
        """(video_id, path, label, manipulation, split) of every video the dataset should have."""

    def list_videos(self, qualities=("c23",), splits=None) -> pd.DataFrame:
        self.check()
        expected = self.expected()
        self.partial = []
        for folder in sorted({str(p.parent) for _, p, *_ in expected}):
            want = [p for _, p, *_ in expected if str(p.parent) == folder]
            found = sum(p.is_file() for p in want)
            if found < len(want):
                self.partial.append({"folder": folder, "found": found, "expected": len(want)})
        if not self.allow_partial:
            raise_if_partial(self.partial, what=f"{self.index_name} lists")
        qualities = [qualities] if isinstance(qualities, str) else list(qualities)
        keep = None if splits is None else ([splits] if isinstance(splits, str) else list(splits))
        rows = [(vid, str(p), label, manip, self.quality, split) for vid, p, label, manip, split in expected
                if p.is_file() and self.quality in qualities and (keep is None or split in keep)]
        return pd.DataFrame(rows, columns=COLUMNS).sort_values(
            ["manipulation", "video_id"], kind="stable").reset_index(drop=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"


@DATASETS.register_module(name="celebdf")
class CelebDF(_OneQuality):
    """Celeb-DF v2's test videos (List_of_testing_videos.txt)."""

    LIST = "List_of_testing_videos.txt"
    FAKE_FOLDER = "Celeb-synthesis"
    index_name = LIST
    hint = "set datasets.<name>.root to your Celeb-DF-v2 folder (with List_of_testing_videos.txt)"

    def expected(self):
        path = self.root / self.LIST
        if not path.is_file():
            raise UserError(f"{path} not found; a Celeb-DF v2 root holds List_of_testing_videos.txt")
        out, seen = [], set()
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or parts[0] not in ("0", "1") or not parts[1].endswith(".mp4") or "/" not in parts[1]:
                raise UserError(f"{path} line {n}: expected '<0|1> <folder>/<name>.mp4', got {line.strip()!r}")
            rel = parts[1]
            for part in rel[:-4].split("/"):  # no '..', no absolute path: the list names files in the root
                plain_id(part, f"{path} line {n}")
            if (self.root / rel).exists():  # a missing one counts in the shortfall (list_videos)
                inside(self.root, self.root / rel, f"{path} line {n}")
            fake = parts[0] == "0"                       # Celeb-DF: 1 = real, 0 = synthesised
            if fake != rel.startswith(self.FAKE_FOLDER + "/"):
                raise UserError(f"{path} line {n}: label {parts[0]} contradicts the folder of {rel} "
                                f"(Celeb-DF lists 1 for real, 0 for {self.FAKE_FOLDER})")
            if rel not in seen:
                seen.add(rel)
                out.append((rel[:-4], self.root / rel, int(fake), "CDF" if fake else "real", "test"))
        if not out:
            raise UserError(f"{path} lists no videos")
        return out


@DATASETS.register_module(name="ffiw")
class FFIW(_OneQuality):
    """FFIW10K's source (real) and target (fake) videos of one split (default test)."""

    index_name = "the source and target folders together"
    hint = "set datasets.<name>.root to your FFIW10K folder (with source/ and target/)"

    def __init__(self, root, split: str = "test", **kwargs):
        super().__init__(root, **kwargs)
        self.split = str(split)

    def expected(self):
        dirs = {kind: self.root / kind / self.split for kind in ("source", "target")}
        names = sorted({inside(self.root, p, "dataset video").stem for d in dirs.values() for p in d.glob("*.mp4")})
        if not names:
            raise UserError(f"no videos in {dirs['source']} or {dirs['target']}; an FFIW10K root holds "
                            f"source/{self.split}/*.mp4 and target/{self.split}/*.mp4")
        return [(f"{kind}/{name}", d / f"{name}.mp4", int(kind == "target"), "FFIW" if kind == "target" else "real",
                 self.split) for kind, d in dirs.items() for name in names]
