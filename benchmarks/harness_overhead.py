"""The harness's training overhead: a training stage against a bare forward/backward loop over the
same images with the same model (a benchmark, not a test).

    python benchmarks/harness_overhead.py [--method baseline] [--images 1920] [--batch 32]
                                          [--sampler uniform] [--repeats 2]

Needs the pipeline's default data (``python -m benchmark run`` or ``dvc repro`` up to
``indicators-ff``). In one process, single-threaded (``torch.set_num_threads(1)``), it times
with process CPU time (``time.process_time``: user + system; on a shared machine wall time
mostly measures waiting for a core) and prints ``key=value`` lines:

- ``bare_s``: ``--images`` crops of the c23 training split already decoded into one uint8 tensor,
  for each batch: JPEG-free, float conversion, the method's forward, loss, backward and Adam step
  (``Method.train_step`` through mmengine's ``OptimWrapper``);
- ``loader_s``: the engine's DataLoader alone over the same crops (PNG decode, the random-JPEG
  augmentation, collation), no model;
- ``stage_s``: ``engine.train`` on the same crops for one epoch (what a ``train`` stage runs:
  the Runner, hooks, per-epoch checkpoint, history), same batch size and model;
- ``overhead=stage_s/bare_s`` (target <= 1.3) and ``loader_share=loader_s/stage_s``;
- ``bare_iters``/``stage_iters`` (optimiser steps of each) and ``overhead_per_iter``: the same ratio
  per step, the like-for-like figure for a method with several training stages (DPL: stage II's
  epochs run after the one epoch of stage I, with their own, different step).
Each figure is the minimum over ``--repeats`` runs.

``--parallel`` instead compares, by wall time (the only clock that sees both cores), the bare loop
over the crops once in one process with 2 torch threads against twice at once in two processes with
1 thread each (what ``run jobs=2`` does): ``one_x2threads_img_s``, ``two_x1thread_img_s`` and
``parallel_gain`` (their ratio; > 1: two single-threaded stages at once are faster).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="baseline")
    ap.add_argument("--images", type=int, default=1920)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--sampler", default="uniform")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--parallel", action="store_true")
    ap.add_argument("--bare-only", action="store_true", help=argparse.SUPPRESS)  # one bare loop (for --parallel)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    if a.parallel:
        return parallel(a)
    sys.path.insert(0, str(ROOT))
    import benchmark  # noqa: F401  (torchvision shim)
    import torch

    from benchmark import config, engine, pipeline
    import pandas as pd

    from benchmark.data.frames import TrainFrames, crops_tensor
    from benchmark.data.jpeg import RandomJPEG
    from benchmark.data.selection import split_rows
    from benchmark.engine.loaders import train_loader
    from benchmark.engine.model import MethodModel
    from benchmark.engine.optim import optim_wrapper, shared_recipe
    from benchmark.indicators import load_indicator

    torch.set_num_threads(a.threads)
    params = config.load_params({"train.sampler": a.sampler}, root=ROOT)
    faces = ROOT / "data/faces/ff"
    rows = split_rows(pd.read_parquet(faces / "manifest.parquet"), "c23", "train")
    rows = rows.sample(frac=1, random_state=0).head(a.images)
    indicator = load_indicator(ROOT / "data/indicators/ff.json", params["indicators"])
    cfg = {**params["train"], "epochs": 1, "batch_size": a.batch}

    iters = {}

    def bare() -> float:
        torch.manual_seed(0)
        images = crops_tensor(faces, rows)
        labels = torch.tensor(rows["label"].to_numpy())
        model = MethodModel(pipeline.build_method(params, a.method), indicator.levels).train()
        wrapper = optim_wrapper(model.method, shared_recipe(cfg))
        start = time.process_time()
        for lo in range(0, len(images), a.batch):
            model.train_step({"image": images[lo:lo + a.batch], "label": labels[lo:lo + a.batch]}, wrapper)
        iters["bare_iters"] = -(-len(images) // a.batch)
        return time.process_time() - start

    def loader() -> float:
        data = TrainFrames(rows, faces, seed=0, augment=RandomJPEG())
        start = time.process_time()
        for _ in train_loader(data, a.batch, cfg, seed=0):
            pass
        return time.process_time() - start

    def stage() -> float:
        torch.manual_seed(0)
        data = TrainFrames(rows, faces, seed=0, augment=RandomJPEG())
        with tempfile.TemporaryDirectory() as tmp:
            start = time.process_time()
            summary = engine.train(pipeline.build_method(params, a.method), data, Path(tmp) / "work", cfg, 0,
                                   levels=indicator.levels, fingerprint="benchmark")
            iters["stage_iters"] = summary["iters"]
            return time.process_time() - start

    if a.bare_only:
        print(f"bare_s={bare():.2f}")
        return
    got = {name: min(fn() for _ in range(a.repeats)) for name, fn in (("bare_s", bare), ("loader_s", loader),
                                                                       ("stage_s", stage))}
    print(f"method={a.method} images={len(rows)} batch={a.batch} sampler={a.sampler} threads=1 clock=process_cpu")
    for k, v in got.items():
        print(f"{k}={v:.2f}")
    print(f"loader_share={got['loader_s'] / got['stage_s']:.3f}")
    print(f"overhead={got['stage_s'] / got['bare_s']:.3f}")
    print(f"bare_iters={iters['bare_iters']}")
    print(f"stage_iters={iters['stage_iters']}")
    print(f"overhead_per_iter={(got['stage_s'] / iters['stage_iters']) / (got['bare_s'] / iters['bare_iters']):.3f}")


def parallel(a) -> None:
    import subprocess
    import time
    cmd = [sys.executable, __file__, "--bare-only", "--method", a.method, "--images", str(a.images),
           "--batch", str(a.batch)]
    env = {**__import__("os").environ}

    def wall(procs: list[list[str]]) -> float:
        start = time.perf_counter()
        running = [subprocess.Popen(p, env={**env, "OMP_NUM_THREADS": p[-1]}, stdout=subprocess.DEVNULL)
                   for p in procs]
        assert all(r.wait() == 0 for r in running)
        return time.perf_counter() - start
    one = min(wall([cmd + ["--threads", "2"]]) for _ in range(a.repeats))
    two = min(wall([cmd + ["--threads", "1"]] * 2) for _ in range(a.repeats))
    print(f"method={a.method} images={a.images} batch={a.batch} clock=wall (includes process start-up)")
    print(f"one_x2threads_img_s={a.images / one:.1f}")
    print(f"two_x1thread_img_s={2 * a.images / two:.1f}")
    print(f"parallel_gain={(2 * a.images / two) / (a.images / one):.3f}")


if __name__ == "__main__":
    main()
