"""SynthFF: seeded, procedurally drawn face videos in the FaceForensics++ layout (DESIGN §6).

Identities are drawn faces (``_synthff_draw``) that move a little, blink and talk. Real
video NNN shows identity NNN; fake TTT_SSS is real video TTT with its face altered (using
source SSS) by one of four manipulations whose traces differ in kind:

  DF   source's inner face pasted through a mask cut on a coarse grid: a blocky blending
       seam (bright ring along the mask edge) and a colour step across it;
  F2F  target re-rendered with the source's expression, softly blended into the inner face
       under other illumination (gain, colour cast, light gradient): no seam, a mismatch;
  FS   source's face pasted seamlessly, then the face region resampled (×2 down, up by a
       transposed-convolution-like kernel): blur plus a period-2 checkerboard;
  NT   lower face (mouth, chin) smoothed: skin texture and sensor grain gone there.

Three more families make the stand-ins of the cross-dataset test sets (DESIGN §6); a
dataset entry picks them with ``synthff: {manipulations: [...], appearance: {...}}``:

  FSH  FaceShifter-like: source face blended in seamlessly, then over-sharpened (unsharp
       mask): a halo/ringing trace instead of FS's blur and checkerboard;
  CDF  Celeb-DF-like: source face colour-matched to the target and softly blended, but
       re-aligned every frame with a small random shift: ghosted edges, no colour step;
  FFIW FFIW10K-like: the source face rendered at a third of the resolution and up-scaled
       without grain (a resolution and noise mismatch), softly blended.

``appearance`` (gain per channel, offset, gamma) shifts the colours of every frame, real and
fake, so a stand-in also differs from SynthFF in look, as a new dataset does.

Each fake video has a seeded strength in STRENGTH (recorded per frame in the metadata) that
scales its trace. Videos: raw (libx264 qp 0: lossless yuv420p, like FF++ raw), c23 and c40
(CRF, yuv420p); metadata.parquet holds per frame the crf, PSNR vs raw, strength and the true
face box. Every random draw is keyed by (seed, purpose, ids), so the output is byte-identical
for a seed, whatever the number of worker processes.
"""
from __future__ import annotations

import functools
import json
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd

from benchmark.data import layout
from benchmark.data._synthff_draw import TRACE, manipulate, render, sample_identity, sample_motion, swap_identity  # noqa: F401
from benchmark.errors import UserError
from benchmark.io import atomic_path
from benchmark import io
from benchmark.registry import DATASETS

STRENGTH = (0.3, 1.0)          # range of the per-video manipulation strength
FPS = 25
MANIPULATIONS = ("DF", "F2F", "FS", "NT")           # the default (SynthFF proper)
STANDIN_MANIPULATIONS = ("FSH", "CDF", "FFIW")        # the cross-dataset stand-ins' families
KINDS = MANIPULATIONS + STANDIN_MANIPULATIONS
FOLDERS = {**layout.FOLDERS, "CDF": "CelebDFLike", "FFIW": "FFIWLike"}   # FSH is FF++'s FaceShifter


def _rng(seed, *key) -> np.random.Generator:
    return np.random.default_rng([int(seed), *[int(k) for k in key]])


def shift_appearance(img: np.ndarray, appearance: dict | None) -> np.ndarray:
    """255·gain·(img/255)^gamma + offset per channel (float RGB); None or {} = unchanged."""
    if not appearance:
        return img
    gain = np.asarray(appearance.get("gain", 1.0), np.float32)
    unit = np.clip(img, 0, 255) / 255.0
    return (255.0 * gain * unit ** float(appearance.get("gamma", 1.0)) + float(appearance.get("offset", 0.0))).astype(np.float32)


def encode(path: Path, frames: list[np.ndarray], crf: int | None) -> None:
    """H.264 (libx264, yuv420p) in mp4: ``crf`` None = lossless (qp 0, FF++'s raw), else CRF.

    Otherwise ffmpeg's defaults (preset medium), except two settings that make the bytes
    reproducible: one x264 thread, and no macroblock-tree rate control (mbtree=0), whose
    output here changed with leftover heap contents from run to run. RGB -> YUV is done by
    OpenCV (BT.601, the matrix OpenCV's decoder assumes)."""
    with av.open(str(path), "w") as box:
        st = box.add_stream("libx264", rate=FPS)
        st.height, st.width = frames[0].shape[:2]
        st.pix_fmt = "yuv420p"
        st.options = {"qp": "0"} if crf is None else {"crf": str(crf), "x264-params": "mbtree=0"}
        st.codec_context.thread_count = 1
        for img in frames:
            yuv = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2YUV_I420)
            box.mux(st.encode(av.VideoFrame.from_ndarray(yuv, format="yuv420p")))
        box.mux(st.encode(None))


def decode(path: Path) -> list[np.ndarray]:
    """All frames of a video as RGB uint8, decoded with OpenCV (as extraction does)."""
    cap, out = cv2.VideoCapture(str(path)), []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return out


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


@functools.lru_cache(maxsize=None)
def _identity(seed: int, size: int, i: int) -> dict:
    return sample_identity(_rng(seed, 2, i), size)


@functools.lru_cache(maxsize=None)
def _motion(seed: int, frames: int, size: int, i: int) -> dict:
    return sample_motion(_rng(seed, 3, i), frames, size)


@functools.lru_cache(maxsize=8)
def _real(seed: int, frames: int, size: int, i: int):
    """Real video of identity i: float frames (with sensor grain) and per-frame geometry."""
    p, m = _identity(seed, size, i), _motion(seed, frames, size, i)
    out = [render(p, m, f, size) for f in range(frames)]
    return [img + _grain(seed, (0, i, f), img.shape, p["grain"]) for f, (img, _) in enumerate(out)], [g for _, g in out]


def _grain(seed, key, shape, sigma):
    return _rng(seed, 7, *key).normal(0, sigma, shape).astype(np.float32)


def _fake(seed: int, frames: int, size: int, kind: str, t: int, s: int):
    """Fake video (target t, source s): float frames, geometry and strength."""
    reals, geoms = _real(seed, frames, size, t)
    rng = _rng(seed, 4, KINDS.index(kind), t, s)
    k = float(rng.uniform(*STRENGTH))
    pt, ps = _identity(seed, size, t), _identity(seed, size, s)
    mt, ms = _motion(seed, frames, size, t), _motion(seed, frames, size, s)
    p, m = (pt, {**mt, "mouth": ms["mouth"], "brow": ms["brow"]}) if kind == "F2F" else (swap_identity(pt, ps), mt)
    out = []
    for f in range(frames):
        donor = None
        if kind != "NT":
            donor = render(p, m, f, size)[0]
            donor += _grain(seed, (5, kind == "F2F", t, s, f), donor.shape, pt["grain"])
        out.append(manipulate(kind, reals[f], donor, geoms[f], k, rng, pt["grain"]))
    return out, geoms, k


def _make_video(job) -> list[dict]:
    """Render, encode (raw, c23, c40) and measure one video; returns its metadata rows."""
    seed, n, size, crfs, tmp, kind, name, appearance = job
    if kind == "real":
        frames, geoms, k = (*_real(seed, n, size, int(name)), 0.0)
    else:
        frames, geoms, k = _fake(seed, n, size, kind, *map(int, name.split("_")))
    frames = [np.clip(np.rint(shift_appearance(img, appearance)), 0, 255).astype(np.uint8) for img in frames]
    rows = []
    for quality, crf in (("raw", None), *crfs.items()):
        folder = layout.real_dir(tmp, quality) if kind == "real" else layout.fake_dir(tmp, kind, quality, FOLDERS)
        folder.mkdir(parents=True, exist_ok=True)
        encode(folder / f"{name}.mp4", frames, crf)
        if crf is None:                            # PSNR is measured against the decoded raw video
            frames, psnr = decode(folder / f"{name}.mp4"), [math.inf] * n
        else:
            psnr = [_psnr(d, r) for d, r in zip(decode(folder / f"{name}.mp4"), frames)]
        for f, g in enumerate(geoms):
            x0, y0, x1, y1 = (int(round(min(max(v, 0), size))) for v in g["box"])
            rows.append(dict(video_id=f"{kind}/{name}", quality=quality, frame_idx=f, crf=crf or 0,
                             psnr=psnr[f], strength=k, x0=x0, y0=y0, x1=x1, y1=y1))
    return rows


def make_splits(seed: int, pairs: dict) -> dict[str, list[list[str]]]:
    """Seeded split of 2·Σpairs identities into [target, source] pairs per split."""
    n_ids = 2 * sum(pairs.values())
    names = [f"{i:0{max(3, len(str(n_ids - 1)))}d}" for i in range(n_ids)]
    order, j, out = _rng(seed, 1).permutation(n_ids), 0, {}
    for split in layout.SPLITS:
        out[split] = [[names[order[j + 2 * i]], names[order[j + 2 * i + 1]]] for i in range(pairs[split])]
        j += 2 * pairs[split]
    return out


def synthesize(cfg: dict, root, workers: int | None = None) -> Path:
    """Generate SynthFF at ``root`` from params ``synthff`` (seed, pairs, frames, size, crf;
    optional manipulations and appearance, as the stand-ins' ``datasets.<id>.synthff`` set),
    replacing it atomically. Videos are independent seeded jobs, so ``workers`` processes
    (default: all cores) give the same bytes as one."""
    try:
        seed, n, size = int(cfg["seed"]), int(cfg["frames"]), int(cfg["size"])
        pairs = {s: int(cfg["pairs"].get(s, 0)) for s in layout.SPLITS}
        crfs = {"c23": int(cfg["crf"]["c23"]), "c40": int(cfg["crf"]["c40"])}
        kinds = tuple(cfg.get("manipulations") or MANIPULATIONS)
        appearance = dict(cfg.get("appearance") or {})
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise UserError(f"params synthff need seed, frames, size, pairs {{train, val, test}} and "
                        f"crf {{c23, c40}} as numbers ({type(err).__name__}: {err})") from None
    if any(k not in KINDS for k in kinds):
        raise UserError(f"synthff manipulations {list(kinds)}: choose from {', '.join(KINDS)}")
    if n < 1 or size < 32 or size % 2 or sum(pairs.values()) < 1:
        raise UserError(f"synthff needs frames >= 1, an even size >= 32 and at least one pair (got {cfg})")
    splits = make_splits(seed, pairs)
    root = Path(root)
    with atomic_path(root) as tmp:
        jobs = []
        for t in sorted(x for plist in splits.values() for pair in plist for x in pair):
            jobs.append((seed, n, size, crfs, tmp, "real", t, appearance))
            partners = [b if a == t else a for plist in splits.values() for a, b in plist if t in (a, b)]
            jobs += [(seed, n, size, crfs, tmp, kind, f"{t}_{s}", appearance) for kind in kinds for s in partners]
        workers = min(workers or os.cpu_count() or 1, 8)
        if workers > 1 and len(jobs) >= 50:         # process start-up (~2 s) only pays off on bigger sets
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                results = list(pool.map(_make_video, jobs, chunksize=max(1, len(jobs) // (4 * workers))))
        else:
            results = [_make_video(job) for job in jobs]
        (tmp / "splits").mkdir()
        for split, plist in splits.items():
            (tmp / "splits" / f"{split}.json").write_text(json.dumps(plist) + "\n")
        meta = pd.DataFrame([row for rows in results for row in rows])
        meta.sort_values(["video_id", "quality", "frame_idx"]).to_parquet(tmp / "metadata.parquet", index=False)
    return root


@DATASETS.register_module(name="synthff")
class SynthFF(layout.FFPP):
    """The generated SynthFF tree at ``root``: an FF++ tree that also knows its metadata."""

    hint = "generate it with `python -m benchmark synthesize dataset=<id>` (params `synthff`)"
    synthetic = True
    folders = FOLDERS

    def metadata(self) -> pd.DataFrame:
        path = self.check() / "metadata.parquet"
        if not path.is_file():
            raise UserError(f"{path} not found; {self.hint}")
        return io.read_table(path, "`python -m benchmark synthesize` (the SynthFF tree is incomplete)")

    def synthesize(self, cfg: dict) -> Path:
        return synthesize(cfg, self.root)

