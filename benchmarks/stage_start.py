"""What every stage pays before its work: the start-up of ``python -m benchmark <verb>``.

    python benchmarks/stage_start.py [--repeat 3]

Each DVC stage is a fresh process, so the grid pays its imports once per stage (186 stages in
the default dvc.yaml, 58 in the end-to-end test's). Every verb imports the CLI and, for its
preflight, every registered module (``registry.load_all``: all methods, datasets, indicators,
conditions); the heavy libraries are imported only where they are used (a model built: timm;
a training: the engine, mmengine's Runner, sklearn). Prints ``key=value`` lines: the wall and
CPU seconds of that common start (best of ``--repeat`` fresh processes), of each heavy library
imported on top of it, and which of them the common start pulled in (none, by design).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("timm", "sklearn", "mmengine.runner", "scipy.stats", "open_clip", "matplotlib.pyplot")
START = "import benchmark.cli; from benchmark import registry; registry.load_all()"
PROBE = """
import json, resource, sys, time
t = time.perf_counter()
{code}
r = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps(dict(wall=time.perf_counter() - t, cpu=r.ru_utime + r.ru_stime,
                      loaded=[m for m in {heavy!r} if m in sys.modules])))
"""


def probe(code: str, repeat: int) -> dict:
    """Best (least CPU) of ``repeat`` fresh interpreters running ``code``."""
    runs = []
    for _ in range(repeat):
        p = subprocess.run([sys.executable, "-c", PROBE.format(code=code, heavy=HEAVY)], cwd=REPO,
                           capture_output=True, text=True, check=True)
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    return min(runs, key=lambda r: r["cpu"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    base = probe(START, a.repeat)
    print(f"start_wall_s={base['wall']:.3f}")
    print(f"start_cpu_s={base['cpu']:.3f}")
    print(f"start_heavy_loaded={','.join(base['loaded']) or 'none'}")
    for lib in HEAVY:
        r = probe(f"{START}; import {lib}", a.repeat)
        print(f"plus_{lib.replace('.', '_')}_cpu_s={r['cpu'] - base['cpu']:.3f}")
    everything = probe(START + "".join(f"; import {lib}" for lib in HEAVY), a.repeat)
    print(f"all_heavy_eager_cpu_s={everything['cpu']:.3f}")
    print(f"start_over_all_heavy_eager={base['cpu'] / everything['cpu']:.3f}")


if __name__ == "__main__":
    main()
