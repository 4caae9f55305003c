"""Face-crop extraction: sampled frames of every video -> lossless square face crops + manifest.

Output (docs/CONTRACTS.md, "Face crops"), built in a temporary folder and swapped in at the
end, so a failed run leaves the previous output (or nothing) and never a half-written one:

    out_dir/crops/<quality>/<video_id>.tar   the video's crops (RGB, size×size, PNG members;
                                             the crop store, ``benchmark.data.store``)
    out_dir/manifest.parquet                 one row per crop; path/offset/nbytes/crc32 locate it
    out_dir/store.json                       the store's format and the stage that rebuilds it
    out_dir/extract_report.json              what was skipped or lost, and why

Community conventions (DESIGN §5): frames spread evenly over the video (linspace, rounded,
unique), one face, its box enlarged ``scale``× to a square, resized to ``size``. Which face:
``face_policy`` (params ``datasets.<id>.faces``, ``benchmark.data.faces.face_tracks``) --
``track`` (default) follows the identity that continues through the video, ``largest`` takes
each frame's largest face (the older convention), ``all`` keeps every tracked face (column
``face``: 0 the longest track, then 1, 2, ...; each with the video's label).
Bad videos (empty, not a video, truncated) and videos without any face are skipped with a
one-line warning and listed in the report; frames without a face are dropped and counted.

At scale: ``workers`` processes over videos (params ``extract.workers``), a tqdm progress bar,
and resumability through per-video part files (see :func:`extract`): a killed extraction
continues where it stopped. ``dataset.partial`` (an incomplete tree run with allow_partial)
is copied into the report's ``partial``.

The CLI verb ``extract dataset=D`` calls :func:`extract_from_params` with ``datasets.D`` and
``extract`` from params.yaml.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from benchmark.data import faces, layout, store
from benchmark import io
from benchmark.io import atomic_path
from benchmark.registry import DATASETS, FACE_DETECTORS, get

MANIFEST_COLUMNS = ["video_id", "frame_idx", "face", "label", "manipulation", "quality", "split",
                    *store.LOCATION_COLUMNS, "detector", "x0", "y0", "x1", "y1"]
INT_COLUMNS = ("frame_idx", "face", "label", "offset", "nbytes", "crc32", "x0", "y0", "x1", "y1")
MAX_WARNINGS = 10   # per kind of non-fatal warning; the report lists them all


def sample_indices(n_frames: int, k: int) -> list[int]:
    """``k`` frame indices spread evenly over ``n_frames`` (all of them if there are fewer)."""
    if n_frames <= k:
        return list(range(n_frames))
    return sorted({int(i) for i in np.rint(np.linspace(0, n_frames - 1, k))})


def read_frames(path, k: int):
    """Decode only the sampled frames of a video with OpenCV.

    Returns (indices, RGB frames, frame count, problem): problem is None, or a one-line
    reason when the file cannot be decoded (then no frames) or ends early (then the frames
    decoded before the end are kept). Frames before the last wanted one are still decoded
    (H.264 needs it) but only the wanted ones are converted (grab/retrieve).
    """
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return [], [], 0, "cannot be opened as a video (empty, truncated or not a video file)"
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n <= 0:
            return [], [], 0, "reports no frames"
        wanted = sample_indices(n, k)
        want, got_idx, got = set(wanted), [], []
        for i in range(wanted[-1] + 1):
            if not cap.grab():
                problem = f"decoding stopped at frame {i} of {n} (truncated or corrupt)"
                return got_idx, got, n, problem if got else f"no decodable frame ({problem})"
            if i in want:
                ok, bgr = cap.retrieve()
                if not ok:
                    return got_idx, got, n, f"frame {i} of {n} cannot be decoded"
                got_idx.append(i)
                got.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        return got_idx, got, n, None
    finally:
        cap.release()


class _Warner:
    """One-line warnings to stderr: every skipped video, at most MAX_WARNINGS of each other
    kind (short videos, lost frames: on SynthFF with 32 frames asked, every video is short),
    then a count."""

    def __init__(self):
        self.counts: dict[str, int] = {}

    def __call__(self, kind: str, message: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == "skip" or self.counts[kind] <= MAX_WARNINGS:
            tqdm.write(f"warning: {message}", file=sys.stderr)

    def summary(self) -> None:
        for kind, n in self.counts.items():
            if kind != "skip" and n > MAX_WARNINGS:
                tqdm.write(f"warning: {n - MAX_WARNINGS} more '{kind}' warnings; see extract_report.json",
                           file=sys.stderr)


def extract(dataset, out_dir, *, frames_per_video: int = 32, scale: float = 1.3, size: int = 224,
            qualities=("c23",), detector="haar", splits=None, progress: bool = True, workers: int = 1,
            face_policy: str = "track") -> dict:
    """Extract face crops of every video of ``dataset`` into ``out_dir``; returns the report.

    ``dataset``: a registered dataset object (``.root``, ``.list_videos(qualities, splits)``)
    or the path of an FF++ tree. ``detector``: a FACE_DETECTORS name (built with the
    dataset's root) or an object with ``detect(frames, video, frame_indices)``.
    ``workers`` > 1 extracts videos in that many processes (same output as one).
    ``face_policy``: ``track``, ``largest`` or ``all`` (module docstring).

    Resumable: each finished video leaves a part file in the work folder ``.<out_dir>.work``
    beside ``out_dir``; a rerun with the same settings skips those videos (``videos_resumed``
    in the report). The manifest is assembled from the parts in listing order and the result
    swapped in atomically; the work folder is removed once it has been.
    """
    if not hasattr(dataset, "list_videos"):
        dataset = layout.FFPP(dataset)
    qualities = [qualities] if isinstance(qualities, str) else list(qualities)
    videos = dataset.list_videos(qualities, splits)          # UserError if the root is missing
    det_name = detector if isinstance(detector, str) else getattr(detector, "name", type(detector).__name__)
    faces.check_policy(face_policy)
    opts = dict(frames_per_video=frames_per_video, scale=scale, size=size, det_name=det_name,
                face_policy=face_policy)
    settings = dict(dataset=type(dataset).__name__, root=str(dataset.root), detector=det_name,
                    qualities=qualities, scale=scale, size=size, frames_per_video=frames_per_video,
                    face_policy=face_policy, store_format=store.FORMAT)
    out_dir = Path(out_dir)
    work = _work_dir(out_dir, settings)
    records = videos.to_dict("records")
    todo = [v for v in records if _load_part(work, v) is None]
    report = dict(**settings, videos_total=len(records), videos_done=0, videos_skipped=0,
                  videos_resumed=len(records) - len(todo), workers=int(workers), frames_written=0,
                  frames_without_face=0, skipped=[], short_videos=[], videos_losing_frames=[],
                  partial=list(getattr(dataset, "partial", []) or []))
    warn = _Warner()
    bar = tqdm(total=len(todo), desc="extract", unit="video", file=sys.stderr, disable=not progress)
    for part in _run(todo, work, dataset.root, detector, opts, workers):
        for kind, message in part["warnings"]:
            warn(kind, message)
        bar.update(1)
    bar.close()
    warn.summary()
    rows = []
    for video in records:
        part = _load_part(work, video)
        if part is None:   # cannot happen unless the work folder was changed underneath us
            raise RuntimeError(f"extraction of {video['path']} left no part file in {work}")
        rows += part["rows"]
        for key in ("skipped", "short_videos", "videos_losing_frames"):
            report[key] += part[key]
        report["frames_without_face"] += part["frames_without_face"]
        report["videos_done" if part["rows"] else "videos_skipped"] += 1
    report["frames_written"] = len(rows)
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS).astype({c: "int64" for c in INT_COLUMNS})
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        manifest.to_parquet(tmp / "manifest.parquet", index=False)
        store.write_store_json(tmp, "extract")
        (tmp / "extract_report.json").write_text(json.dumps(report, indent=2) + "\n")
        if (work / "crops").is_dir():
            os.replace(work / "crops", tmp / "crops")
    shutil.rmtree(work, ignore_errors=True)
    return report


# ---------------------------------------------------------------- resumable work folder
def _work_dir(out_dir: Path, settings: dict) -> Path:
    """``.<name>.work`` beside ``out_dir``; emptied when it was left by other settings."""
    work = out_dir.parent / f".{out_dir.name}.work"
    stamp = work / "settings.json"
    if work.is_dir() and _json_or_none(stamp) != settings:  # other settings (or an unreadable stamp)
        shutil.rmtree(work)
    if not work.is_dir():
        work.mkdir(parents=True)
        io.write_json(stamp, settings)
    return work


def _json_or_none(path: Path):
    """A work file's JSON, or None when it is missing or damaged (its video is then redone)."""
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _part_path(work: Path, video: dict) -> Path:
    return work / "parts" / video["quality"] / f"{video['video_id']}.json"


def _load_part(work: Path, video: dict) -> dict | None:
    """The finished video's part, or None if it must be (re)done (no part, or a crop gone)."""
    path = _part_path(work, video)
    if not path.is_file():
        return None
    part = _json_or_none(path)
    if not isinstance(part, dict) or part.get("path") != video["path"] or not store.shard_complete(work, part["rows"]):
        return None
    return part


def _run(todo: list[dict], work: Path, root, detector, opts: dict, workers: int):
    """Yield each video's part as it finishes, in one process or ``workers`` processes."""
    if workers <= 1 or len(todo) < 2:
        det = faces.build_detector(detector, root) if isinstance(detector, str) else detector
        for video in todo:
            yield _one_video(video, work, det, opts)
        return
    ctx = multiprocessing.get_context("spawn")   # no fork: the parent may hold torch threads
    if isinstance(detector, str):   # resolve the class here: workers then skip the registry's imports
        detector = get(FACE_DETECTORS, detector)
    with ProcessPoolExecutor(min(workers, len(todo)), mp_context=ctx, initializer=_init_worker,
                             initargs=(detector, root)) as pool:
        futures = [pool.submit(_worker, video, work, opts) for video in todo]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


_DETECTOR = None   # the worker process's detector


def _init_worker(detector, root) -> None:
    """``detector``: a detector class (built here with ``root``) or a ready detector object."""
    global _DETECTOR
    _DETECTOR = detector(root=root) if isinstance(detector, type) else detector


def _worker(video: dict, work: Path, opts: dict) -> dict:
    return _one_video(video, work, _DETECTOR, opts)


def _one_video(video: dict, work: Path, detector, opts: dict) -> dict:
    """Crops of one video into ``work``/crops, then its part file (written last, atomically)."""
    k = opts["frames_per_video"]
    where = dict(video_id=video["video_id"], quality=video["quality"], path=video["path"])
    part = dict(path=video["path"], rows=[], skipped=[], short_videos=[], videos_losing_frames=[],
                frames_without_face=0, warnings=[])
    indices, frames, n, problem = read_frames(video["path"], k)
    tracks = faces.face_tracks(detector, frames, video, indices, opts["face_policy"]) if frames else []
    boxes = tracks[0] if tracks else []
    if not frames or all(b is None for b in boxes):
        reason = problem if not frames else f"no face found in any of {len(frames)} sampled frames"
        part["skipped"].append({**where, "reason": reason})
        part["warnings"].append(("skip", f"skipping {video['path']}: {reason}"))
    else:
        if problem:
            part["short_videos"].append({**where, "frames": len(frames), "reason": problem})
            part["warnings"].append(("short", f"{video['path']}: {problem}; using the {len(frames)} frames decoded"))
        elif n < k:
            part["short_videos"].append({**where, "frames": n, "reason": f"only {n} frames"})
            part["warnings"].append(("short", f"{video['path']} has only {n} frames (< {k} asked); using all"))
        lost = sum(b is None for b in boxes)
        if lost:
            part["frames_without_face"] = lost
            part["videos_losing_frames"].append({**where, "frames_lost": lost, "frames_sampled": len(frames)})
            part["warnings"].append(("lost", f"{video['path']}: no face in {lost} of {len(frames)} sampled frames; dropped"))
        part["rows"] = _save_crops(work, video, indices, frames, tracks, opts)
    io.write_json(_part_path(work, video), part)
    return part


def _save_crops(work: Path, video: dict, indices, frames, tracks, opts: dict) -> list[dict]:
    """Every tracked face's crops of one video as its shard; returns their manifest rows."""
    members, rows = [], []
    for face, track in enumerate(tracks):
        for idx, frame, box in zip(indices, frames, track):
            if box is None:
                continue
            x0, y0, x1, y1 = square = faces.square_crop_box(box, opts["scale"], frame.shape)
            members.append((store.member_name(idx, face), faces.crop(frame, square, opts["size"])))
            rows.append(dict(video_id=video["video_id"], frame_idx=idx, face=face, label=int(video["label"]),
                             manipulation=video["manipulation"], quality=video["quality"], split=video["split"],
                             detector=opts["det_name"], x0=x0, y0=y0, x1=x1, y1=y1))
    locations = store.write_shard(work, store.shard_path(video["quality"], video["video_id"]), members)
    return [{**r, **loc} for r, loc in zip(rows, locations)]


def extract_from_params(dataset_cfg: dict, extract_cfg: dict, out_dir, base_dir=".", progress=True) -> dict:
    """``extract dataset=D``: ``dataset_cfg`` = params ``datasets.D`` (name, root,
    face_detector), ``extract_cfg`` = params ``extract``; a relative root is taken from
    ``base_dir`` (the project root)."""
    root = Path(base_dir) / dataset_cfg["root"]
    dataset = build_dataset(dataset_cfg, root)
    keys = ("frames_per_video", "scale", "size", "qualities", "workers")
    return extract(dataset, out_dir, detector=dataset_cfg.get("face_detector", "haar"), progress=progress,
                   face_policy=dataset_cfg.get("faces", "track"), **{k: extract_cfg[k] for k in keys if k in extract_cfg})


def build_dataset(dataset_cfg: dict, root=None):
    """The DATASETS class ``dataset_cfg["name"]`` built with the entry's other keys (``root``,
    ``allow_partial``, ``manipulations``, ...); ``root`` overrides the entry's."""
    kwargs = {k: v for k, v in dataset_cfg.items()
              if k not in ("name", "face_detector", "faces", "synthff", "indicator_edges")}
    kwargs["root"] = dataset_cfg["root"] if root is None else root
    return get(DATASETS, dataset_cfg["name"])(**kwargs)
