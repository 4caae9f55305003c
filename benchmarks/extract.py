"""Extraction throughput against pure decoding of the same sampled frames, in one run.

    python benchmarks/extract.py [--root TREE --dataset ffpp] [--detector haar] [--workers 1]

Registry imports happen before timing. Without ``--root`` it generates a small SynthFF tree in a temporary folder (seeded). It first
decodes every video's sampled frames once untimed (warm file cache), then times
(1) pure decoding of exactly those frames (``extract.read_frames``) and (2) the full
extraction (decode, detect, crop, PNG write, per-video parts, manifest) of the same videos
with ``workers`` processes. Prints frames/s of both; the last line is
``extract_over_decode=<extraction time / decode time>`` (target <= 2).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.data import extract as ex  # noqa: E402
from benchmark.data import synthff  # noqa: E402
from benchmark.registry import DATASETS, load_all  # noqa: E402

SMALL = dict(seed=0, pairs=dict(train=3, val=1, test=1), frames=32, size=96, crf=dict(c23=23, c40=40))


def main(argv=None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", help="an existing tree (default: generate a small SynthFF)")
    ap.add_argument("--dataset", default="synthff", help="DATASETS name of --root")
    ap.add_argument("--detector", default=None, help="FACE_DETECTORS name (default: synthff_boxes on SynthFF, else haar)")
    ap.add_argument("--frames-per-video", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--quality", default="c23")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
        root = Path(args.root) if args.root else synthff.synthesize(SMALL, Path(tmp) / "synthff", workers=1)
        dataset = DATASETS.get(args.dataset)(root=root)
        detector = args.detector or ("synthff_boxes" if args.dataset == "synthff" and not args.root else "haar")
        paths = dataset.list_videos([args.quality])["path"].tolist()
        k = args.frames_per_video
        load_all()                                        # registry imports (timm, ...): not extraction
        for p in paths:                                   # warm the file cache, untimed
            ex.read_frames(p, k)
        t0 = time.perf_counter()
        n_decoded = sum(len(ex.read_frames(p, k)[1]) for p in paths)
        decode_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = ex.extract(dataset, Path(tmp) / "faces", frames_per_video=k, size=args.size,
                            qualities=[args.quality], detector=detector, progress=False, workers=args.workers)
        extract_s = time.perf_counter() - t0
    print(f"videos={len(paths)} frames_decoded={n_decoded} frames_written={report['frames_written']} "
          f"detector={detector} workers={args.workers}")
    print(f"decode: {decode_s:.3f} s, {n_decoded / decode_s:.1f} frames/s")
    print(f"extract: {extract_s:.3f} s, {report['frames_written'] / extract_s:.1f} frames/s")
    ratio = extract_s / decode_s
    print(f"extract_over_decode={ratio:.2f}")
    return ratio


if __name__ == "__main__":
    main()
