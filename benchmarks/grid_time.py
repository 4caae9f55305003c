"""The grid's time stage by stage, from what a run logged (``.benchmark/logs/times.tsv``).

    make demo                                   # or python -m benchmark run [key=value ...]
    python benchmarks/grid_time.py [--project DIR] [--top 15]

Lists the stages the project's params.yaml declares (``pipeline.dag.instances``; a run with
overrides ran in its own workspace, so pass that as ``--project``) and joins each with the wall
and CPU seconds ``python -m benchmark run`` logged when it finished (``executor.logged_times``:
the last line of a stage wins, a rerun replaces it). Prints ``key=value`` lines: per verb the
stages declared, measured and their wall / CPU sums; per train stage its method and figures
(slowest first, ``--top``); the total CPU of what was measured; the stages with no line yet.
Nothing is estimated: a stage with no line counts as not measured. A stage restored from DVC's
run cache or found up to date logs no line. A training interrupted and resumed logs only the
resumed part (its ``train.json`` ``seconds`` too), so read a resumed stage's figure as a lower
bound.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmark import config  # noqa: E402
from benchmark.pipeline import dag, executor  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=Path.cwd(), help="the project the grid ran in")
    ap.add_argument("--top", type=int, default=15, help="train stages listed, slowest first")
    a = ap.parse_args()
    params = config.load_params(root=a.project)
    insts = dag.instances(params)
    times = executor.logged_times(a.project)
    by_verb = defaultdict(list)
    for inst in insts:
        by_verb[inst.stage.verb].append(inst)
    print(f"stages={len(insts)} measured={sum(i.name in times for i in insts)}")
    for verb, group in by_verb.items():
        got = [times[i.name] for i in group if i.name in times]
        print(f"verb={verb} stages={len(group)} measured={len(got)} "
              f"wall_s={sum(w for w, _ in got):.0f} cpu_s={sum(c for _, c in got):.0f}")
    trains = sorted((i for i in by_verb.get("train", []) if i.name in times), key=lambda i: -times[i.name][1])
    for inst in trains[:a.top]:
        wall, cpu = times[inst.name]
        print(f"train={inst.name} method={inst.stage.meta.get('method', '?')} wall_s={wall:.0f} cpu_s={cpu:.0f}")
    cpu = sum(times[i.name][1] for i in insts if i.name in times)
    print(f"measured_cpu_s={cpu:.0f} measured_cpu_h={cpu / 3600:.2f}")
    missing = [i.name for i in insts if i.name not in times]
    print(f"not_measured={len(missing)}" + (f" first={','.join(missing[:5])}" if missing else ""))


if __name__ == "__main__":
    main()
