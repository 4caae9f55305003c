"""Cost of every grid method: parameters, GFLOPs, inference speed, peak training memory.

One row per (method, setting): ``default`` is the method as params.yaml builds it at the grid's
input size (``extract.size``); ``paper`` overrides the constructor with the class attribute
``paper_setting`` (a dict, e.g. ``{"backbone": "legacy_xception"}``) at ``paper_input_size``.
A method that declares neither gets its default row only (a note says so on stderr).
``cost.settings`` chooses which of the two settings are measured.

Columns (``COLUMNS``):
- ``params_m``: all parameters of the module, millions;
- ``gflops``: FLOPs of one eval-mode forward of one image, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts 2 FLOPs; it counts
  matmul/conv/attention-like aten ops, not element-wise ones nor FFTs), in 1e9;
- ``images_per_s``: eval-mode inference on params.yaml ``device`` (column ``device``),
  ``cost.batch_size`` images per call, best of ``cost.iters`` timed calls after one warm-up
  call (on CUDA each call is synchronised), with torch's current thread count;
- ``train_peak_mb``: one training step (``method.train_step`` with Adam through mmengine's
  OptimWrapper, batch ``cost.batch_size``) in a fresh Python subprocess. On the CPU: its peak
  resident set (``VmHWM`` of /proc/self/status, reset to the current size through
  /proc/self/clear_refs just before the model is built) minus its resident set at that moment,
  so the interpreter, the libraries and their import-time peak are not counted (``ru_maxrss``
  is not used: Linux carries it over ``execve`` from the parent, so a child would report the
  parent's peak). On CUDA: ``torch.cuda.max_memory_allocated`` of that step, model included.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmark import io, registry
from benchmark.engine.device import describe, resolve
from benchmark.errors import UserError

COLUMNS = ["method", "backbone", "setting", "input_size", "params_m", "gflops", "images_per_s", "train_peak_mb",
           "device"]
OUT = Path("results/cost.csv")


def _root(params: dict, name: str) -> str:
    """The registered class of a ``methods`` entry: its own name, or ``registered`` when the caller
    passes a resolved variant (``{registered: dpl, **options}``)."""
    return (params["methods"].get(name) or {}).get("registered", name)


def settings(params: dict, name: str) -> list[tuple[str, dict, int]]:
    """[(setting, constructor kwargs, input size)] of one method."""
    cls = registry.get(registry.METHODS, _root(params, name))
    if name not in params["methods"]:
        raise UserError(f"method {name!r} has no entry under `methods:` in params.yaml; add one with its options")
    default = {k: v for k, v in (params["methods"][name] or {}).items() if k != "registered"}
    wanted = params.get("cost", {}).get("settings", ["default", "paper"])
    rows = [("default", default, int(params["extract"]["size"]))]
    paper, size = getattr(cls, "paper_setting", None), getattr(cls, "paper_input_size", None)
    if "paper" in wanted and (paper is None or size is None):
        print(f"note: {name} declares no paper_setting/paper_input_size; only its default row is measured",
              file=sys.stderr)
    elif "paper" in wanted:
        rows.append(("paper", {**default, **paper}, int(size)))
    return [r for r in rows if r[0] in wanted]


def dummy_batch(model, n: int, size: int, k: int, seed: int = 0) -> dict:
    """A random batch with every capability the engine can provide (levels, quality pair, manipulation)."""
    g = torch.Generator().manual_seed(seed)
    batch = {"image": torch.rand(n, 3, size, size, generator=g), "label": torch.arange(n) % 2}
    batch["vqi_level"] = torch.randint(1, k + 1, (n,), generator=g)
    batch["fii_level"] = torch.randint(1, k + 1, (n,), generator=g)
    batch["image_pair"] = (batch["image"] + 0.02 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)
    batch["manipulation"] = torch.where(batch["label"] == 1, torch.arange(n) % 4 + 1, 0)
    return batch


def build(name: str, kwargs: dict):
    torch.manual_seed(0)
    return registry.get(registry.METHODS, name)(**kwargs)


def count_gflops(model, batch: dict) -> float:
    one = {key: v[:1] for key, v in batch.items()}
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(one)
    return counter.get_total_flops() / 1e9


def images_per_s(model, batch: dict, iters: int) -> float:
    model.eval()
    device = batch["image"].device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *_: None)
    with torch.no_grad():
        model(batch)  # warm-up
        best = float("inf")
        for _ in range(max(int(iters), 1)):
            sync(device)
            start = time.perf_counter()
            model(batch)
            sync(device)
            best = min(best, time.perf_counter() - start)
    return batch["image"].shape[0] / best


def measure(params: dict, name: str, setting: str, kwargs: dict, size: int, device="cpu") -> dict:
    cfg = params.get("cost", {})
    n, iters = int(cfg.get("batch_size", 2)), int(cfg.get("iters", 2))
    model = build(_root(params, name), kwargs).to(device)
    batch = {key: v.to(device) for key, v in dummy_batch(model, n, size, int(params["indicators"]["k"])).items()}
    return {
        "method": name, "backbone": kwargs.get("backbone", ""), "setting": setting, "input_size": size,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "gflops": count_gflops(model, batch),
        "images_per_s": images_per_s(model, batch, iters),
        "train_peak_mb": train_peak_mb(_root(params, name), kwargs, size, n, int(params["indicators"]["k"]), str(device)),
        "device": describe(device),
    }


def train_peak_mb(name: str, kwargs: dict, size: int, n: int, k: int, device: str = "cpu") -> float:
    """Peak memory of one training step, measured in a fresh subprocess (see the module docstring)."""
    job = json.dumps({"name": name, "kwargs": kwargs, "size": size, "n": n, "k": k, "device": device})
    done = subprocess.run([sys.executable, "-m", "benchmark.evaluation.cost", job], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"training-memory probe of {name} failed:\n{done.stderr[-2000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["train_peak_mb"])


def _probe(job: dict) -> float:
    from mmengine.optim import OptimWrapper
    registry.load_all()
    before_mb = _status_mb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
    except OSError:
        pass  # kernels without it: VmHWM then also holds the import-time peak (an overestimate)
    device = torch.device(job.get("device", "cpu"))
    model = build(job["name"], job["kwargs"]).to(device).train()
    batch = {key: v.to(device) for key, v in dummy_batch(model, job["n"], job["size"], job["k"]).items()}
    wrapper = OptimWrapper(torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4))
    model.train_step(batch, wrapper)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return _status_mb("VmHWM") - before_mb


def _status_mb(field: str) -> float:
    """A memory field of /proc/self/status (Linux), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise UserError(f"/proc/self/status has no {field}; peak training memory needs Linux")


def cost_table(params: dict, methods: list[str] | None = None) -> pd.DataFrame:
    device = resolve(params.get("device", "auto"))
    rows = []
    for name in methods or params["grid"]["methods"]:
        for setting, kwargs, size in settings(params, name):
            print(f"[cost] {name} {setting} ({kwargs.get('backbone', '')}, {size} px, {device})", file=sys.stderr)
            rows.append(measure(params, name, setting, kwargs, size, device))
    return pd.DataFrame(rows, columns=COLUMNS)


def write_cost_table(params: dict, methods: list[str] | None = None) -> Path:
    io.write_csv(OUT, cost_table(params, methods).round({"params_m": 3, "gflops": 4, "images_per_s": 1,
                                                          "train_peak_mb": 1}))
    return OUT


if __name__ == "__main__":  # the subprocess of train_peak_mb
    print(json.dumps({"train_peak_mb": _probe(json.loads(sys.argv[1]))}))
