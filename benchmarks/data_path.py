"""The data path at FaceForensics++'s size, without downloads (profile ``ffpp_size``).

    python benchmarks/data_path.py                     # the whole profile: 360/70/70 pairs, 32 frames, 224 px
    python benchmarks/data_path.py --scale 0.05        # 5 % of the pairs (each split at least one)
    python benchmarks/data_path.py --no-png            # without the PNG-per-file copy (half the disk)

Synthesises SynthFF with ``profiles/ffpp_size.yaml`` once (kept under ``--out``; a rerun reuses
it), then measures and prints ``key=value`` lines:

* extraction: frames per CPU-second of the extracting process(es) (= per worker core), the
  crop store's size on disk against the same crops as one PNG file each (the old layout, written
  here from the store's bytes), and the files each layout has;
* DVC: ``dvc add`` and ``dvc status`` (wall and CPU of the dvc process) on the store and on the
  PNG-per-file layout, with the project's cache link types (.dvc/config), and the cache's size;
* the training loader: TrainFrames with the random-JPEG augmentation through a DataLoader with one
  worker, images per CPU-second of the worker process (its rusage), and of decoding alone;
* evaluation: ``evaluation.score`` of two methods (baseline and spsl, random init, the grid's
  small backbones unless --paper-backbone) on test crops under the four random-JPEG conditions,
  with CLIP ViT-B/32 (random weights: the real indicator's cost) as the indicator: images per
  CPU-second, and the indicator cache's hit rate and CPU time on the second method against the
  same scoring without the cache.

Times are process CPU time (user + sys) unless a key says ``wall``: the machine may be shared.
With ``--scale`` < 1 every count is for that scale, and ``*_at_ffpp_size`` keys multiply the
per-video figures by FF++'s 5,000 videos per quality (a projection, labelled as such).
"""
from __future__ import annotations

import argparse
import configparser
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import benchmark  # noqa: E402,F401
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from benchmark import config  # noqa: E402
from benchmark.data import extract as ex  # noqa: E402
from benchmark.data import store, synthff  # noqa: E402

FFPP_VIDEOS_PER_QUALITY = 5000      # 1000 reals + 4 x 1000 fakes


def cpu(children: bool = False) -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def out(**kv) -> None:
    for k, v in kv.items():
        print(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}", flush=True)


def disk_usage(path: Path) -> tuple[int, int]:
    """(bytes on disk, files) under ``path``."""
    blocks, files = 0, 0
    for p in path.rglob("*"):
        if p.is_file():
            blocks += p.stat().st_blocks * 512
            files += 1
    return blocks, files


def synthesise(params: dict, root: Path, workers: int) -> None:
    if (root / "metadata.parquet").is_file():
        out(synthesis="reused", synth_root=root)
        return
    t, tc = cpu(), cpu(True)
    synthff.synthesize(params["synthff"], root, workers=workers)
    out(synthesis="done", synth_cpu_s=cpu() - t + cpu(True) - tc)


def extraction(params: dict, root: Path, faces: Path, workers: int) -> pd.DataFrame:
    if not (faces / "manifest.parquet").is_file():
        t, tc = cpu(), cpu(True)
        rep = ex.extract(synthff.SynthFF(root), faces, progress=False, detector="synthff_boxes",
                         workers=workers, **{k: params["extract"][k] for k in
                                             ("frames_per_video", "scale", "size", "qualities")})
        spent = cpu() - t + cpu(True) - tc
        out(extract_videos=rep["videos_done"], extract_frames=rep["frames_written"], extract_workers=workers,
            extract_cpu_s=spent, extract_frames_per_cpu_s=rep["frames_written"] / spent)
    m = pd.read_parquet(faces / "manifest.parquet")
    return m


def png_layout(faces: Path, m: pd.DataFrame, dest: Path) -> None:
    """The same crops as one PNG file each (the layout before the store), from the store's bytes."""
    if dest.is_dir():
        return
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for r in m.itertuples():
        p = tmp / "crops" / r.quality / r.video_id / f"{r.frame_idx:04d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(store.read_bytes(faces, r))
    os.replace(tmp, dest)


def sizes(faces: Path, pngs: Path | None, m: pd.DataFrame) -> None:
    s_bytes, s_files = disk_usage(faces / "crops")
    if pngs is not None:
        p_bytes, p_files = disk_usage(pngs / "crops")
        out(png_files=p_files, png_bytes_on_disk=p_bytes, store_over_png_on_disk=s_bytes / p_bytes)
    n_videos = m.groupby(["quality", "video_id"]).ngroups
    per_q = n_videos / len(m["quality"].unique())
    out(crops=len(m), crop_px=int(store.read_crop(faces, m.iloc[0]).shape[0]), videos=n_videos,
        store_files=s_files, store_bytes_on_disk=s_bytes, png_payload_bytes=int(m["nbytes"].sum()),
        raw_rgb_bytes=int(len(m) * store.read_crop(faces, m.iloc[0]).size),
        store_bytes_per_crop=s_bytes / len(m),
        store_gb_at_ffpp_size=s_bytes / n_videos * FFPP_VIDEOS_PER_QUALITY * len(m["quality"].unique()) / 1e9,
        store_files_at_ffpp_size=int(FFPP_VIDEOS_PER_QUALITY * len(m["quality"].unique())),
        png_files_at_ffpp_size=int(len(m) / per_q * FFPP_VIDEOS_PER_QUALITY))


def dvc_times(work: Path, target: Path, label: str, replicate: int = 1, timeout: int = 1800) -> None:
    """``dvc add`` then ``dvc status`` on ``target`` in a fresh DVC repo with the project's link types.

    ``replicate`` > 1 puts that many hard-linked copies of ``target`` in the tracked folder, so that
    ``dvc status`` sees FF++'s number of files (the copies share inodes, so ``dvc add`` hashes each
    content once: its time is a lower bound; ``status`` stats and looks up every file as usual)."""
    label = label if replicate == 1 else f"{label}_x{replicate}"
    repo = work / f"dvc_{label}"
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = [str(Path(sys.executable).with_name("dvc"))]
    subprocess.run(dvc + ["init", "--no-scm", "-q"], cwd=repo, check=True, env=env)
    link = configparser.ConfigParser()
    link.read(REPO / ".dvc" / "config")
    link_types = link.get("cache", "type", fallback="reflink,copy")   # DVC's default when unset
    subprocess.run(dvc + ["config", "cache.type", link_types], cwd=repo, check=True, env=env)
    out(**{f"dvc_{label}_cache_type": link_types})
    for k in range(replicate):
        shutil.copytree(target, repo / "data" / f"copy{k}", copy_function=os.link)
    out(**{f"dvc_{label}_files_tracked": sum(1 for p in (repo / "data").rglob("*") if p.is_file())})
    for step in (["add", "data"], ["status"], ["status"]):
        t, tc = time.perf_counter(), cpu(True)
        try:
            subprocess.run(dvc + step + ["-q"], cwd=repo, check=True, env=env, stdout=subprocess.DEVNULL,
                           timeout=timeout)
        except subprocess.TimeoutExpired:
            out(**{f"dvc_{step[0]}_{label}": f"timeout_after_{timeout}s"})
            return
        out(**{f"dvc_{step[0]}_{label}_wall_s": time.perf_counter() - t, f"dvc_{step[0]}_{label}_cpu_s": cpu(True) - tc})
    cache_files = sum(1 for p in (repo / ".dvc" / "cache").rglob("*") if p.is_file())
    out(**{f"dvc_cache_{label}_files": cache_files, f"dvc_cache_{label}_bytes_on_disk_new": _new_blocks(repo / ".dvc" / "cache")})


def _new_blocks(path: Path) -> int:
    """Bytes the cache holds that the workspace does not share with it (0 with hardlinks)."""
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file() and p.stat().st_nlink == 1)


def loader(faces: Path, m: pd.DataFrame, n_images: int) -> None:
    from torch.utils.data import DataLoader

    from benchmark.data.frames import TrainFrames
    from benchmark.data.jpeg import RandomJPEG
    rows = m[(m["quality"] == "c23") & (m["split"] == "train")]
    rows = rows.sample(n=min(n_images, len(rows)), random_state=0).reset_index(drop=True)
    best: dict[str, float] = {}
    for _ in range(2):                  # each measured twice, interleaved; the best pass counts
        t = cpu()
        for r in rows.itertuples():
            store.read_crop(faces, r)
        best["decode"] = min(best.get("decode", 1e9), cpu() - t)
        for aug in (None, RandomJPEG()):
            data = TrainFrames(rows, faces, seed=0, augment=aug)
            tc, tm, n = cpu(True), cpu(), 0
            for batch in DataLoader(data, batch_size=32, num_workers=1, shuffle=True,
                                    generator=torch.Generator().manual_seed(0)):
                n += len(batch["image"])
            name = "loader_jpeg_aug" if aug else "loader_no_aug"
            best[name] = min(best.get(name, 1e9), cpu(True) - tc)    # the worker exited: rusage in CHILDREN
            best[name + "_main"] = min(best.get(name + "_main", 1e9), cpu() - tm)
    n = len(rows)
    out(loader_images=n, decode_images_per_cpu_s=n / best["decode"])
    for name in ("loader_no_aug", "loader_jpeg_aug"):
        out(**{f"{name}_images_per_worker_cpu_s": n / best[name],
               f"{name}_main_process_cpu_s_per_1000_images": 1000 * best[name + "_main"] / n})


def evaluation(params: dict, faces: Path, m: pd.DataFrame, n_frames: int, work: Path, paper: bool,
               indicator: str) -> None:
    from benchmark.evaluation import score as ev
    from benchmark.evaluation.conditions import get_conditions
    from benchmark.evaluation.indicator_cache import IndicatorCache
    from benchmark.indicators import FallbackIndicator, IndicatorLevels, OpenCLIPIndicator
    from benchmark.pipeline.stages import build_method
    rows = m[(m["quality"] == "c23") & (m["split"] == "test")]
    rows = rows.sample(n=min(n_frames, len(rows)), random_state=0).sort_index()
    base = config.load_params({}, root=REPO) if not paper else params
    # clip_random: CLIP ViT-B/32 with random weights -- the cost of the real indicator, meaningless scores
    backend = (OpenCLIPIndicator("ViT-B-32", weights="random") if indicator == "clip_random"
               else FallbackIndicator(reason="benchmark"))
    out(evaluate_indicator=indicator)
    ind = IndicatorLevels.fit(np.linspace(0, 1, 50), np.linspace(0, 1, 50), "quantile", 5, backend)
    cond = get_conditions("random_jpeg")
    cache = IndicatorCache(work / "indicator_cache")
    shutil.rmtree(cache.directory, ignore_errors=True)
    for i, name in enumerate(("baseline", "spsl")):
        torch.manual_seed(0)
        method = build_method(base, name)
        t = cpu()
        ev.score(method, rows, faces, cond, ind, 64, 0, cache=cache)
        spent = cpu() - t
        n = len(rows) * cond.n_conditions
        out(**{f"evaluate_{name}_images": n, f"evaluate_{name}_images_per_cpu_s": n / spent,
               f"evaluate_{name}_indicator_cache_hits": cache.hits})
        if i == 1:
            out(indicator_cache_hit_rate_second_method=cache.hits / n,
                evaluate_backbone=base["methods"]["baseline"]["backbone"])
    t = cpu()
    ev.score(method, rows, faces, cond, ind, 64, 0)
    out(evaluate_spsl_without_cache_cpu_s=cpu() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of FF++'s pairs (default 1)")
    ap.add_argument("--out", type=Path, default=REPO / "data" / "ffpp_size")
    ap.add_argument("--workers", type=int, default=1, help="synthesis and extraction processes")
    ap.add_argument("--loader-images", type=int, default=2000)
    ap.add_argument("--eval-frames", type=int, default=200)
    ap.add_argument("--paper-backbone", action="store_true", help="evaluate the profile's backbones")
    ap.add_argument("--indicator", choices=["clip_random", "fallback"], default="clip_random",
                    help="evaluation's indicator backend (clip_random: ViT-B/32 cost, random weights)")
    ap.add_argument("--steps", default="sizes,loader,evaluate,dvc",
                    help="what to measure after synthesis and extraction (which are done once and reused)")
    ap.add_argument("--no-png", action="store_true",
                    help="skip the PNG-per-file copy and its figures (at full size it needs as much disk as the store)")
    ap.add_argument("--dvc-timeout", type=int, default=900, help="seconds allowed per dvc command on the copies")
    ap.add_argument("--dvc-replicate", type=int, default=0,
                    help="also time dvc on this many hard-linked copies of each layout (0: round(1/scale))")
    a = ap.parse_args()
    torch.set_num_threads(1)
    a.dvc_replicate = a.dvc_replicate or round(1 / a.scale)
    params = config.load_params({"profile": "ffpp_size"}, root=REPO)
    pairs = {k: max(1, round(v * a.scale)) for k, v in params["synthff"]["pairs"].items()}
    params["synthff"]["pairs"] = pairs
    tag = "full" if a.scale == 1 else f"scale{a.scale:g}"
    work = a.out / tag
    out(profile="ffpp_size", scale=a.scale, pairs=json.dumps(pairs, separators=(",", ":")),
        frames_per_video=params["extract"]["frames_per_video"], crop_size=params["extract"]["size"],
        synth_frame_size=params["synthff"]["size"], out=work)
    synthesise(params, work / "raw", a.workers)
    faces = work / "faces"
    m = extraction(params, work / "raw", faces, a.workers)
    steps = a.steps.split(",")
    pngs = None if a.no_png else work / "faces_png"
    if pngs is not None and ("sizes" in steps or "dvc" in steps):
        png_layout(faces, m, pngs)
    if "sizes" in steps:
        sizes(faces, pngs, m)
    if "loader" in steps:
        loader(faces, m, a.loader_images)
    if "evaluate" in steps:
        evaluation(params, faces, m, a.eval_frames, work, a.paper_backbone, a.indicator)
    if "dvc" in steps:
        layouts = [("store", faces)] + ([("png", pngs)] if pngs is not None else [])
        for label, target in layouts:
            dvc_times(work, target, label)
        for label, target in layouts if a.dvc_replicate > 1 else ():
            dvc_times(work, target, label, a.dvc_replicate, timeout=a.dvc_timeout)
            shutil.rmtree(work / f"dvc_{label}_x{a.dvc_replicate}", ignore_errors=True)


if __name__ == "__main__":
    main()
