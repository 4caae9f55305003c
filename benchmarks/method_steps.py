"""CPU cost of one training step of every grid method at its params.yaml default, against the
plain baseline's, measured in one run (process CPU time, so other load on the machine counts
less than in wall time).

    OMP_NUM_THREADS=1 python -m benchmarks.method_steps [steps=5] [batch=32] [methods=a,b] [key=value ...]

(other ``key=value`` pairs override params.yaml, e.g. ``profile=paper``)

Each method is built from params.yaml, put in the middle of a training run
(``Method.on_train_iter``: every part of its objective active, AWP included), and trained on a
fixed random batch at ``extract.size`` with the capabilities it requires. Prints one
``key=value`` line per method and the ratio to ``baseline``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import benchmark  # noqa: F401  (torchvision shim before timm)
import torch
from mmengine.optim import OptimWrapper

from benchmark import registry
from benchmark.config import load_params
from benchmark.pipeline.graph import resolve_method

ROOT = Path(__file__).resolve().parents[1]


def batch_for(model, n: int, size: int, k: int) -> dict:
    g = torch.Generator().manual_seed(0)
    label = (torch.arange(n) % 5 != 0).long()  # 1 : 4 real : fake, as the default grid
    batch = {"image": torch.rand(n, 3, size, size, generator=g), "label": label}
    if "quality_pair" in model.requires:
        batch["image_pair"] = (batch["image"] + 0.05 * torch.randn(batch["image"].shape, generator=g)).clamp(0, 1)
    if "manipulation_label" in model.requires:
        batch["manipulation"] = torch.where(label == 1, torch.arange(n) % 4 + 1, 0)
    if "indicator_levels" in model.requires:
        batch["vqi_level"] = torch.randint(1, k + 1, (n,), generator=g)
        batch["fii_level"] = torch.randint(1, k + 1, (n,), generator=g)
    return batch


def step_seconds(model, batch: dict, steps: int) -> float:
    model.train().on_train_iter(500, 600, 60)  # the ninth of ten epochs of 60 iterations
    wrapper = OptimWrapper(torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5))
    for _ in range(2):  # warm-up
        model.train_step(batch, wrapper)
    start = time.process_time()
    for _ in range(steps):
        model.train_step(batch, wrapper)
    return (time.process_time() - start) / steps


def main(argv: list[str]) -> None:
    opts = dict(a.split("=", 1) for a in argv)
    own = {k: opts.pop(k) for k in ("steps", "batch", "methods") if k in opts}
    params = load_params(opts, root=ROOT)
    opts = own
    names = opts.get("methods", ",".join(params["grid"]["methods"])).split(",")
    names = ["baseline"] + [n for n in names if n != "baseline"]
    steps, n = int(opts.get("steps", 5)), int(opts.get("batch", 32))
    size, k = int(params["extract"]["size"]), int(params["indicators"]["k"])
    registry.load_all()
    base = None
    for name in names:
        cls_name, options = resolve_method(params, name)
        torch.manual_seed(0)
        model = registry.METHODS.get(cls_name)(**options)
        sec = step_seconds(model, batch_for(model, n, size, k), steps)
        base = sec if name == "baseline" else base
        params_m = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"method={name} backbone={options.get('backbone')} params_m={params_m:.2f} "
              f"cpu_s_per_step={sec:.3f} ratio_to_baseline={sec / base:.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
