"""Training throughput through the engine's own step, at the paper profile (a benchmark, not a test).

    python benchmarks/train_throughput.py [device=auto] [methods=baseline,dpl] [amps=none,bf16]
        [backbone=convnext_tiny] [size=224] [batch=32] [steps=3] [warmup=1] [workers=0]
        [indicator=fallback|clip] [channels_last=false] [threads=<torch default>]

One training step is what ``engine.train`` runs per iteration: the DataLoader's next batch
(``TrainFrames`` crops decoded from PNG with the release's random-JPEG augmentation,
``engine.loaders``), the data preprocessor (batch to the device, DPL's indicator levels on the
augmented images) and the method's own ``train_step`` through the optimiser wrapper (Adam 5e-5;
``amp`` = mmengine's AMP wrapper, ``engine.optim``). DPL runs stage I (both branches, k = 5; its
GRU loop runs all k steps for the batch). The crops are synthetic textures at ``size`` px (not
faces: decoding cost is what matters). ``indicator``: ``fallback`` (the offline statistics) or
``clip`` (open_clip ViT-B-32 with random weights: the cost of the CLIP indicator, not its values).

The (method, amp) runs take their steps in turn (round robin), so that on a shared machine each
sees the same load. Per (method, amp), after ``warmup`` steps, the median over ``steps`` of:
``load_s`` (waiting for the batch), ``step_s`` (preprocess + train_step; on CUDA bracketed by
``torch.cuda.synchronize``), wall clock; ``load_cpu_s``/``step_cpu_s``: the same in process CPU
time (user + system of all threads; with workers the main process only waits), the figures to
compare on a shared CPU where wall time mostly measures waiting for a core. ``images_per_s`` =
batch / (load_s + step_s) (wall), ``compute_images_per_s`` = batch / step_s, ``load_share`` =
load_s / (load_s + step_s) and ``load_share_cpu`` the same in CPU time. Ratios within the run:
``dpl_over_baseline_<amp>`` (step_s, or step_cpu_s on the CPU) and ``bf16_over_none_<method>``.
Prints ``key=value`` lines.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULTS = {"device": "auto", "methods": "baseline,dpl", "amps": "none,bf16", "backbone": "convnext_tiny",
            "size": "224", "batch": "32", "steps": "3", "warmup": "1", "workers": "0", "indicator": "fallback",
            "channels_last": "false", "threads": ""}


def parse(argv: list[str]) -> dict:
    args = dict(DEFAULTS)
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in DEFAULTS:
            raise SystemExit(f"expected key=value with key in {', '.join(DEFAULTS)}; got {item!r}")
        args[key] = value
    return args


def crops(root: Path, n: int, size: int):
    """``n`` smooth colour textures as PNG crops, with a TrainFrames manifest."""
    import cv2
    import numpy as np
    import pandas as pd
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        low = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
        img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
        img = np.clip(img.astype(np.int16) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / f"{i}.png"), img)
        rows.append({"path": f"{i}.png", "label": i % 2})
    return pd.DataFrame(rows)


def indicator_levels(kind: str, device):
    from benchmark.indicators import FallbackIndicator, IndicatorLevels, OpenCLIPIndicator
    backend = (OpenCLIPIndicator(model="ViT-B-32", weights="random", device=device) if kind == "clip"
               else FallbackIndicator(device=device))
    edges = [0.2, 0.4, 0.6, 0.8]
    return IndicatorLevels("quantile", 5, edges, edges, backend=backend).levels


class Run:
    """One (method, amp) trained through the engine's step; ``step()`` times one iteration."""

    def __init__(self, method_name: str, amp: str, args: dict, data, device, levels):
        import torch

        from benchmark import registry
        from benchmark.engine import MethodModel, optim
        from benchmark.engine import device as dev
        from benchmark.engine.loaders import train_loader
        torch.manual_seed(0)
        method = registry.get(registry.METHODS, method_name)(backbone=args["backbone"]).to(device).train()
        if args["channels_last"] == "true":
            dev.channels_last(method)
        self.name, self.amp, self.batch, self.device = method_name, amp, int(args["batch"]), device
        self.model = MethodModel(method, levels, args["channels_last"] == "true").to(device)
        self.wrapper = optim.optim_wrapper(method, {"optimizer": {"type": "Adam", "lr": 5e-5}}, amp, device)
        self.loader = train_loader(data, self.batch, {"num_workers": int(args["workers"])}, seed=0, device=device)
        self.it, self.times = iter(self.loader), []
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *_: None)

    def step(self, record: bool) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            batch_data = next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            batch_data = next(self.it)
        self.sync(self.device)
        t1, c1 = time.perf_counter(), time.process_time()
        self.model.train_step(batch_data, self.wrapper)
        self.sync(self.device)
        t2, c2 = time.perf_counter(), time.process_time()
        if record:
            self.times.append((t1 - t0, c1 - c0, t2 - t1, c2 - c1))

    def result(self) -> dict:
        load_s, load_cpu_s, step_s, cpu_s = (statistics.median(x) for x in zip(*self.times))
        return {"method": self.name, "amp": self.amp, "load_s": load_s, "step_s": step_s, "load_cpu_s": load_cpu_s,
                "step_cpu_s": cpu_s, "images_per_s": self.batch / (load_s + step_s),
                "compute_images_per_s": self.batch / step_s, "load_share": load_s / (load_s + step_s),
                "load_share_cpu": load_cpu_s / (load_cpu_s + cpu_s)}


def main(argv: list[str]) -> None:
    args = parse(argv)
    import benchmark  # noqa: F401  (torchvision shim before timm)
    import torch

    from benchmark import registry
    from benchmark.data.frames import TrainFrames
    from benchmark.data.jpeg import RandomJPEG
    from benchmark.engine import device as dev
    if args["threads"]:
        torch.set_num_threads(int(args["threads"]))
    registry.load_all()
    device = dev.resolve(args["device"])
    dev.set_deterministic(False, device)  # throughput: cuDNN may pick its fastest kernels
    size, batch = int(args["size"]), int(args["batch"])
    print(f"device={dev.describe(device).replace(' ', '_')} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"backbone={args['backbone']} size={size} batch={batch} steps={args['steps']} warmup={args['warmup']} "
          f"workers={args['workers']} indicator={args['indicator']} channels_last={args['channels_last']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = TrainFrames(crops(Path(tmp), 2 * batch, size), Path(tmp), seed=0, augment=RandomJPEG())
        levels = indicator_levels(args["indicator"], device)
        runs = {(name, amp): Run(name, amp, args, data, device, levels if name == "dpl" else None)
                for amp in args["amps"].split(",") for name in args["methods"].split(",")}
        for i in range(int(args["warmup"]) + int(args["steps"])):  # round robin: all see the same load
            for run in runs.values():
                run.step(record=i >= int(args["warmup"]))
        rows = {key: run.result() for key, run in runs.items()}
        for r in rows.values():
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()), flush=True)
    key = "step_s" if device.type == "cuda" else "step_cpu_s"
    for amp in args["amps"].split(","):
        if ("dpl", amp) in rows and ("baseline", amp) in rows:
            print(f"dpl_over_baseline_{amp}={rows['dpl', amp][key] / rows['baseline', amp][key]:.3f} (by {key})")
    for name in args["methods"].split(","):
        if (name, "bf16") in rows and (name, "none") in rows:
            print(f"bf16_over_none_{name}={rows[name, 'bf16'][key] / rows[name, 'none'][key]:.3f} (by {key})")


if __name__ == "__main__":
    main(sys.argv[1:])
