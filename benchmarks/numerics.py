"""What ``numerics: portable`` costs, and what it buys: a training loop under each setting.

    python benchmarks/numerics.py [--model resnet10t] [--size 64] [--batch 32] [--steps 30]

Each run is a fresh process (the setting must come before torch's first operation) on one
thread: ``steps`` AdamW steps of a timm model from random init on a fixed random batch, the
default grid's backbone and crop side unless told. For ``native`` and ``portable`` it runs on
this CPU and on an emulated AVX2-only CPU (oneDNN, MKL and ATen capped at AVX2, as on a machine
without AVX-512), and prints ``key=value`` lines: CPU seconds per step, the weights' digest
after the last step, whether the two CPUs agree bit for bit, and the portable/native CPU ratio.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOOP = """
import hashlib, json, sys, time
import benchmark
from benchmark.engine import device
device.set_numerics({mode!r})
import timm, torch
torch.set_num_threads(1)
torch.manual_seed(0)
model = timm.create_model({model!r}, num_classes=2)
opt = torch.optim.AdamW(model.parameters(), 1e-3)
g = torch.Generator().manual_seed(1)
x, y = torch.rand({batch}, 3, {size}, {size}, generator=g), torch.randint(0, 2, ({batch},), generator=g)
loss = torch.nn.functional.cross_entropy(model(x), y); loss.backward(); opt.zero_grad()  # warm-up
t = time.process_time()
for _ in range({steps}):
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
cpu = time.process_time() - t
digest = hashlib.sha1(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()[:16]
print(json.dumps(dict(how=device.numerics(), cpu_per_step=cpu / {steps}, digest=digest)))
"""


def run(mode: str, narrow: bool, args) -> dict:
    import os

    from benchmark.engine.device import AVX2_ONLY_ENV as AVX2_ONLY
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", *AVX2_ONLY)}
    code = LOOP.format(mode=mode, model=args.model, size=args.size, batch=args.batch, steps=args.steps)
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                       env={**env, **(AVX2_ONLY if narrow else {})})
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet10t")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    print(f"model={args.model} size={args.size} batch={args.batch} steps={args.steps} threads=1")
    cpu = {}
    for mode in ("native", "portable"):
        here, narrow = run(mode, False, args), run(mode, True, args)
        cpu[mode] = here["cpu_per_step"]
        print(f"{mode}_here={here['how']!r} {mode}_cpu_s_per_step={here['cpu_per_step']:.4f} "
              f"{mode}_digest={here['digest']}")
        print(f"{mode}_avx2_only={narrow['how']!r} {mode}_avx2_only_cpu_s_per_step={narrow['cpu_per_step']:.4f} "
              f"{mode}_avx2_only_digest={narrow['digest']} {mode}_same_bits={here['digest'] == narrow['digest']}")
    print(f"portable_over_native_cpu={cpu['portable'] / cpu['native']:.2f}")


if __name__ == "__main__":
    main()
