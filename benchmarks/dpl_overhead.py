"""DPL's training-step overhead over its backbone alone (a benchmark, not a test).

    python benchmarks/dpl_overhead.py [--backbone convnext_tiny] [--size 224] [--batch 32]
                                      [--iters 3] [--warmup 1] [--devices cpu,cuda]

Measures, in one run, the forward + backward (+ loss) time of one training step and the peak
memory for (a) the baseline method (the backbone with a linear head) and (b) DPL with the same
backbone (stage I, both branches, k = 5 with random levels 1..5: the step loop always runs all
k steps for the batch). Each (variant, device) runs in a fresh subprocess so one cannot inherit
the other's allocator high-water mark.

- Time: median over ``--iters`` steps after ``--warmup`` steps; on CUDA each step is bracketed
  by ``torch.cuda.synchronize()`` and the ratio uses wall time. On the CPU the ratio uses the
  step's process CPU time (``time.process_time``, user + system of all threads): on a shared
  machine wall time mostly measures waiting for a core, CPU time the work done. Wall time is
  printed too. Run with ``OMP_NUM_THREADS=1`` on a busy machine.
- Memory, CPU: the process's peak resident set (``resource.getrusage(RUSAGE_SELF).ru_maxrss``)
  at the end, minus the resident set measured (``/proc/self/statm``) after importing torch and
  timm and before building the model: what the model, its gradients, the optimiser-free step
  and its activations added at their peak. Memory, CUDA: ``torch.cuda.max_memory_allocated()``
  after ``reset_peak_memory_stats()`` (the model is on the device before the reset, so this is
  parameters + gradients + activations, as the CPU number).

Prints one line per device and variant, one ratio line per device, and, last,
``time_ratio=<x> memory_ratio=<y>`` of the last device measured (CUDA when available).
Target from the issue: <= 1.2x time, <= 1.3x memory.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_kib() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def measure(variant: str, device: str, backbone: str, size: int, batch: int, iters: int, warmup: int) -> dict:
    """Runs inside the subprocess: one variant on one device."""
    import resource
    import statistics
    import time

    sys.path.insert(0, str(ROOT))
    import benchmark  # noqa: F401  (torchvision shim before timm)
    import torch
    import timm  # noqa: F401

    from methods.baseline import Baseline
    from methods.dpl import DPL

    torch.manual_seed(0)
    rss0 = _rss_kib()
    model = (Baseline(backbone=backbone) if variant == "backbone" else DPL(backbone=backbone)).to(device).train()
    g = torch.Generator().manual_seed(0)
    data = {"image": torch.rand(batch, 3, size, size, generator=g), "label": torch.arange(batch) % 2,
            "vqi_level": torch.randint(1, 6, (batch,), generator=g), "fii_level": torch.randint(1, 6, (batch,), generator=g)}
    data = {k: v.to(device) for k, v in data.items()}
    cuda = device.startswith("cuda")

    def step():
        model.zero_grad(set_to_none=True)
        model.loss(model(data), data)["loss"].backward()

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, cpu_times = [], []
    for _ in range(iters):
        if cuda:
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    if cuda:
        mem_mib = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        mem_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    wall, cpu = statistics.median(times), statistics.median(cpu_times)
    return {"variant": variant, "device": device, "wall_seconds": wall, "cpu_seconds": cpu,
            "seconds": wall if cuda else cpu, "memory_mib": mem_mib}


def _child(variant: str, device: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, "--devices", device, "--backbone", args.backbone,
           "--size", str(args.size), "--batch", str(args.batch), "--iters", str(args.iters), "--warmup", str(args.warmup)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{variant} on {device} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="convnext_tiny")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--devices", default=None, help="comma-separated; default cpu, plus cuda when available")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.devices, args.backbone, args.size, args.batch, args.iters, args.warmup)))
        return
    if args.devices:
        devices = args.devices.split(",")
    else:
        import torch
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"backbone={args.backbone} size={args.size} batch={args.batch} iters={args.iters} warmup={args.warmup}")
    last = None
    for device in devices:
        base, dpl = _child("backbone", device, args), _child("dpl", device, args)
        for r in (base, dpl):
            print(f"{device} {r['variant']:8s} step_wall={r['wall_seconds']:.3f}s step_cpu={r['cpu_seconds']:.3f}s "
                  f"peak_memory={r['memory_mib']:.0f}MiB")
        last = (dpl["seconds"] / base["seconds"], dpl["memory_mib"] / base["memory_mib"])
        wall = dpl["wall_seconds"] / base["wall_seconds"]
        print(f"{device} ratios: time={last[0]:.3f} ({'wall' if device.startswith('cuda') else 'cpu time'}; "
              f"wall {wall:.3f}) memory={last[1]:.3f}")
    print(f"time_ratio={last[0]:.3f} memory_ratio={last[1]:.3f}")


if __name__ == "__main__":
    main()
