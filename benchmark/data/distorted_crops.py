"""Distorted face crops for the robustness protocol: ``distort dataset=D distortion=C severity=S``.

DeeperForensics-1.0 distorts whole video frames, so for every video of the clean crops'
manifest (the qualities and splits in params ``distort``) this decodes the raw video, applies
the distortion (``benchmark.data.distortions``) to each sampled full frame — VC re-encodes the
whole video first — and THEN crops with the box found on the clean video (the clean
manifest's x0, y0, x1, y1 for that video_id / quality / frame_idx), resized to the clean
crops' size. Output, a face-crops folder of the usual shape (docs/CONTRACTS.md: the crop
store, one tar shard per video, ``benchmark.data.store``) built atomically:

    out_dir/crops/<quality>/<video_id>.tar
    out_dir/store.json
    out_dir/manifest.parquet   the clean manifest's columns for the rows written (with this
                               folder's path/offset/nbytes/crc32), plus
                               perturbation (the code), severity, param (the level's value),
                               rng_key (the frame's random stream: benchmark.data.jpeg.key_rng(seed, rng_key))
                               and detail (JSON of the random choices, e.g. BW block corners)
    out_dir/distort_report.json  distortion, severity, param, seed, counts, skipped videos

Random draws are keyed by (seed, code, severity, quality, video_id, frame_idx), so they do not
depend on the order videos are processed in.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import pandas as pd
from tqdm import tqdm

from benchmark.data import faces, store
from benchmark.data.distortions import get_distortion
from benchmark.errors import UserError
from benchmark.io import atomic_path
from benchmark import io
from benchmark.data.jpeg import key_rng

EXTRA_COLUMNS = ["perturbation", "severity", "param", "rng_key", "detail"]


def decode(path, upto: int | None = None) -> list:
    """RGB frames 0..upto (all when None) of a video, decoded with OpenCV as extraction does."""
    cap, out = cv2.VideoCapture(str(path)), []
    try:
        while upto is None or len(out) <= upto:
            ok, bgr = cap.read()
            if not ok:
                break
            out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    return out


def distort_faces(dataset, clean_dir, out_dir, code: str, severity: int, *, seed: int = 0,
                  qualities=("c23",), splits=("test",), options: dict | None = None,
                  progress: bool = True) -> dict:
    """Write the distorted crops of ``dataset`` (a registered dataset object) to ``out_dir``."""
    distortion = get_distortion(code, options)
    param = distortion.param(severity)
    clean_dir = Path(clean_dir)
    manifest_path = clean_dir / "manifest.parquet"
    clean = io.read_table(manifest_path, "`python -m benchmark extract` first",
                          ["video_id", "frame_idx", "quality", "split", "path"])
    store.check_manifest(clean, manifest_path)
    rows = clean[clean["quality"].isin(list(qualities)) & clean["split"].isin(list(splits))]
    if rows.empty:
        raise UserError(f"{manifest_path} has no frames of quality {list(qualities)} and split "
                        f"{list(splits)}; check distort.qualities / distort.splits in params.yaml")
    size = int(store.read_crop(clean_dir, rows.iloc[0]).shape[0])
    paths = {(r.video_id, r.quality): r.path for r in
             dataset.list_videos(sorted(rows["quality"].unique()), sorted(rows["split"].unique())).itertuples()}
    report = dict(distortion=code, severity=int(severity), param=param, seed=int(seed),
                  source=str(clean_dir), qualities=list(qualities), splits=list(splits),
                  videos_done=0, frames_written=0, skipped=[])
    out = []
    with atomic_path(out_dir) as tmp:
        groups = rows.groupby(["video_id", "quality"], sort=True)
        for (vid, quality), grp in tqdm(groups, desc=f"distort {code}{severity}", unit="video",
                                        file=sys.stderr, disable=not progress):
            path = paths.get((vid, quality))
            grp = grp.sort_values("frame_idx")
            want = grp["frame_idx"].astype(int).tolist()
            frames = decode(path, None if distortion.whole_video else max(want)) if path else []
            if len(frames) <= max(want):
                report["skipped"].append({"video_id": vid, "quality": quality, "path": str(path),
                                          "reason": "video missing or shorter than its clean frames"})
                continue
            if distortion.whole_video:
                frames = distortion.apply_video(frames, severity)
            made = [_distort(r, frames[int(r["frame_idx"])], distortion, severity, param, seed, size)
                    for r in grp.to_dict("records")]
            locations = store.write_shard(tmp, store.shard_path(quality, vid),
                                          [(store.member_name(r["frame_idx"], r.get("face", 0)), img) for r, img in made])
            out += [{**r, **loc} for (r, _), loc in zip(made, locations)]
            report["videos_done"] += 1
        if not out:
            raise UserError(f"no video of {manifest_path} could be distorted; see the dataset root")
        report["frames_written"] = len(out)
        store.write_store_json(tmp, "distort")
        pd.DataFrame(out, columns=list(clean.columns) + EXTRA_COLUMNS).to_parquet(
            tmp / "manifest.parquet", index=False)
        (tmp / "distort_report.json").write_text(json.dumps(report, indent=2) + "\n")
    for s in report["skipped"]:
        print(f"warning: skipped {s['path']}: {s['reason']}", file=sys.stderr)
    return report


def _distort(row: dict, frame, distortion, severity, param, seed, size) -> tuple[dict, object]:
    """(the manifest row without its location, the distorted crop) of one clean crop."""
    key = f"{distortion.code}/{severity}/{row['quality']}/{row['video_id']}/{int(row['frame_idx'])}"
    if row.get("face", 0):
        key += f"/{int(row['face'])}"
    detail = {}
    if not distortion.whole_video:
        frame, detail = distortion.apply(frame, severity, key_rng(seed, key))
    img = faces.crop(frame, (row["x0"], row["y0"], row["x1"], row["y1"]), size)
    return ({**row, "perturbation": distortion.code, "severity": int(severity), "param": float(param),
             "rng_key": key, "detail": json.dumps(detail, sort_keys=True)}, img)
