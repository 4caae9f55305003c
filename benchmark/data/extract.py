"""Face-crop extraction: sampled frames of every video -> lossless square face crops + manifest.

Output (docs/CONTRACTS.md, "Face crops"), built in a temporary folder and swapped in at the
end, so a failed run leaves the previous output (or nothing) and never a half-written one:

    out_dir/crops/<quality>/<video_id>/<frame_idx:04d>.png   RGB, size×size, PNG (lossless)
    out_dir/manifest.parquet                                 one row per crop
    out_dir/extract_report.json                              what was skipped or lost, and why

Community conventions (DESIGN §5): frames spread evenly over the video (linspace, rounded,
unique), the largest face, its box enlarged ``scale``× to a square, resized to ``size``.
Bad videos (empty, not a video, truncated) and videos without any face are skipped with a
one-line warning and listed in the report; frames without a face are dropped and counted.

The CLI verb ``extract dataset=D`` calls :func:`extract_from_params` with ``datasets.D`` and
``extract`` from params.yaml.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from benchmark.data import faces, layout
from benchmark.io import atomic_path
from benchmark.registry import DATASETS, get

MANIFEST_COLUMNS = ["video_id", "frame_idx", "label", "manipulation", "quality", "split", "path",
                    "detector", "x0", "y0", "x1", "y1"]
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
            qualities=("c23",), detector="haar", splits=None, progress: bool = True) -> dict:
    """Extract face crops of every video of ``dataset`` into ``out_dir``; returns the report.

    ``dataset``: a registered dataset object (``.root``, ``.list_videos(qualities, splits)``)
    or the path of an FF++ tree. ``detector``: a FACE_DETECTORS name (built with the
    dataset's root) or an object with ``detect(frames, video, frame_indices)``.
    """
    if not hasattr(dataset, "list_videos"):
        dataset = layout.FFPP(dataset)
    qualities = [qualities] if isinstance(qualities, str) else list(qualities)
    videos = dataset.list_videos(qualities, splits)          # UserError if the root is missing
    det_name = detector if isinstance(detector, str) else getattr(detector, "name", type(detector).__name__)
    if isinstance(detector, str):
        detector = faces.build_detector(detector, dataset.root)
    report = dict(dataset=type(dataset).__name__, root=str(dataset.root), detector=det_name,
                  qualities=qualities, scale=scale, size=size, frames_per_video=frames_per_video,
                  videos_total=len(videos), videos_done=0, videos_skipped=0, frames_written=0,
                  frames_without_face=0, skipped=[], short_videos=[], videos_losing_frames=[])
    warn, rows = _Warner(), []
    with atomic_path(out_dir) as tmp:
        bar = tqdm(videos.to_dict("records"), desc="extract", unit="video", file=sys.stderr, disable=not progress)
        for video in bar:
            where = dict(video_id=video["video_id"], quality=video["quality"], path=video["path"])
            indices, frames, n, problem = read_frames(video["path"], frames_per_video)
            if not frames:
                _skip(report, warn, where, problem)
                continue
            boxes = detector.detect(frames, video, indices)
            if all(b is None for b in boxes):
                _skip(report, warn, where, f"no face found in any of {len(frames)} sampled frames")
                continue
            if problem:
                report["short_videos"].append({**where, "frames": len(frames), "reason": problem})
                warn("short", f"{video['path']}: {problem}; using the {len(frames)} frames decoded")
            elif n < frames_per_video:
                report["short_videos"].append({**where, "frames": n, "reason": f"only {n} frames"})
                warn("short", f"{video['path']} has only {n} frames (< {frames_per_video} asked); using all")
            lost = sum(b is None for b in boxes)
            if lost:
                report["frames_without_face"] += lost
                report["videos_losing_frames"].append({**where, "frames_lost": lost, "frames_sampled": len(frames)})
                warn("lost", f"{video['path']}: no face in {lost} of {len(frames)} sampled frames; dropped")
            for idx, frame, box in zip(indices, frames, boxes):
                if box is not None:
                    rows.append(_save_crop(tmp, video, idx, frame, box, scale, size, det_name))
            report["videos_done"] += 1
        bar.close()
        warn.summary()
        report["frames_written"] = len(rows)
        manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS).astype(
            {c: "int64" for c in ("frame_idx", "label", "x0", "y0", "x1", "y1")})
        manifest.to_parquet(tmp / "manifest.parquet", index=False)
        (tmp / "extract_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _skip(report: dict, warn, where: dict, reason: str) -> None:
    report["videos_skipped"] += 1
    report["skipped"].append({**where, "reason": reason})
    warn("skip", f"skipping {where['path']}: {reason}")


def _save_crop(tmp: Path, video: dict, idx: int, frame, box, scale: float, size: int, det_name: str) -> dict:
    square = faces.square_crop_box(box, scale, frame.shape)
    rel = f"crops/{video['quality']}/{video['video_id']}/{idx:04d}.png"
    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(tmp / rel), cv2.cvtColor(faces.crop(frame, square, size), cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {tmp / rel}")
    x0, y0, x1, y1 = square
    return dict(video_id=video["video_id"], frame_idx=idx, label=int(video["label"]),
                manipulation=video["manipulation"], quality=video["quality"], split=video["split"],
                path=rel, detector=det_name, x0=x0, y0=y0, x1=x1, y1=y1)


def extract_from_params(dataset_cfg: dict, extract_cfg: dict, out_dir, base_dir=".", progress=True) -> dict:
    """``extract dataset=D``: ``dataset_cfg`` = params ``datasets.D`` (name, root,
    face_detector), ``extract_cfg`` = params ``extract``; a relative root is taken from
    ``base_dir`` (the project root)."""
    root = Path(base_dir) / dataset_cfg["root"]
    dataset = get(DATASETS, dataset_cfg["name"])(root=root)
    keys = ("frames_per_video", "scale", "size", "qualities")
    return extract(dataset, out_dir, detector=dataset_cfg.get("face_detector", "haar"), progress=progress,
                   **{k: extract_cfg[k] for k in keys if k in extract_cfg})
