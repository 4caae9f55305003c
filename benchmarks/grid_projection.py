"""The whole grid's time at its declared epochs, from a run of the same grid at fewer epochs.

    python -m benchmark run train.epochs=1 methods.dpl.stage2_epochs=1     # every stage, in a workspace
    python benchmarks/grid_projection.py --run .benchmark/workspaces/<that workspace> [--project .]

On 2 cores the default grid is hours of training, more than one sitting can measure. Within a
training stage the epochs mostly cost the same (the same data, the same model: what changes between
epochs is the weights), so the grid run at one epoch per training stage measures every stage: those that do
not train (data, distortions, evaluations, metrics, analyses, plots, report, cost: their work does
not depend on the epochs) at their own cost, and each training stage's cost per epoch
(``train.json``: per training stage its epochs and seconds, validation and checkpoints included).
A training is projected to the ``--project``'s epochs by adding, per stage it trained itself, the
missing epochs at that stage's measured seconds per epoch::

    projected = measured + sum over trained stages (epochs wanted - epochs run) * stage seconds / epochs run

Stages adopted from another training (``adopted_from``) and trainings that take another whole
(``reused_from``) are not projected: they train nothing. Epochs wanted per stage come from each
method built with the project's params (``Method.training_stages``).

The projection holds only where a stage's epochs cost the same. A method whose step changes after
some epochs is under-projected by a run that stops before the change: QAD perturbs the weights
(two forward/backward passes a step) only after ``awp_warmup_epochs`` (3) plain epochs, UIA-ViT
adds its patch-consistency loss and refits from its second epoch. So where the project has measured
a training in full (its own ``.benchmark/logs/times.tsv``, e.g. ``python -m benchmark run
protocol=cross_manipulation method=qad``), that figure is used (``source=measured``) and the line
also gives the projection and the ratio projected / measured: the check of the projection on the
same machine.

Prints ``key=value`` lines: per verb the stages and their CPU / wall sums (trainings projected),
every training's run, projected and (where there is one) measured figures, the total CPU, and the
wall time of the grid at ``grid.jobs`` stages at a time (``simulated_wall_s``, or ``_at_least`` while
stages of the grid are missing from the run: the executor's order
simulated with each stage's time alone on a core, taken as the smaller of its wall and CPU seconds:
the CPU seconds of a one-thread stage that shared a core with other work, the wall seconds of one
whose encoder ran several threads).
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmark import config, io, registry  # noqa: E402
from benchmark.pipeline import dag, executor  # noqa: E402
from benchmark.pipeline.specs import model_dir, resolve_method, train_cfg  # noqa: E402
from benchmark.schema import methods as method_schema  # noqa: E402


def wanted_epochs(params: dict, method: str) -> dict[str, int]:
    """{training stage: epochs} of ``method`` under ``params``."""
    root, opts = resolve_method(params, method)
    built = method_schema.dry_build(method, registry.get(registry.METHODS, root), opts)
    return dict(built.training_stages(train_cfg(params, method)["epochs"]))


def stage_records(record: dict) -> list[dict]:
    """The training stages a ``train.json`` ran itself, each with stage, epochs and seconds."""
    if "reused_from" in record:
        return []
    stages = record.get("stages") or [{"stage": None, "epochs": record["epochs"], "seconds": record["seconds"]}]
    return [s for s in stages if "adopted_from" not in s and s["epochs"] > 0]


def added_seconds(record: dict, wanted: dict[str, int]) -> float:
    """The seconds the epochs a run lacks would add, at each trained stage's seconds per epoch."""
    out = 0.0
    for s in stage_records(record):
        epochs = wanted[s["stage"]] if s["stage"] is not None else next(iter(wanted.values()))
        out += (epochs - s["epochs"]) * s["seconds"] / s["epochs"]
    return out


def simulate(insts: list[dag.Instance], wall: dict[str, float], jobs: int) -> float:
    """Makespan of ``executor.run``'s schedule: the stages in dependency-wave order, each started,
    in that order, as soon as its upstream is done and one of ``jobs`` slots is free."""
    up = dag.upstream(insts)
    pending, running, done, now = [i.name for w in dag.waves(insts) for i in w], [], set(), 0.0
    while pending or running:
        for name in [n for n in pending if all(u in done for u in up[n])]:
            if len(running) >= jobs:
                break
            pending.remove(name)
            running.append((now + wall.get(name, 0.0), name))
        running.sort()
        now, name = running.pop(0)
        done.add(name)
    return now


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="the project (workspace) that ran the grid at fewer epochs")
    ap.add_argument("--project", type=Path, default=Path.cwd(), help="the project whose epochs are projected to")
    ap.add_argument("--jobs", type=int, default=None, help="stages at once for the wall figure (default grid.jobs)")
    a = ap.parse_args()
    registry.load_all()
    params = config.load_params(root=a.project)
    insts = dag.instances(params)
    ran, full = executor.logged_times(a.run), executor.logged_times(a.project)
    wall, cpu, by_verb, wanted = {}, {}, defaultdict(list), {}
    for inst in insts:
        if inst.name not in ran:
            continue
        wall[inst.name], cpu[inst.name] = ran[inst.name]
        by_verb[inst.stage.verb].append(inst.name)
        if inst.stage.verb != "train":
            continue
        method = inst.stage.meta["method"]
        wanted.setdefault(method, wanted_epochs(params, method))
        record = io.read_json(a.run / model_dir(inst.stage.meta["train_set"], method, inst.seed) / "train.json",
                              "the run's `train` stage")
        extra = added_seconds(record, wanted[method])
        projected = cpu[inst.name] + extra
        line = (f"train={inst.name} run_cpu_s={ran[inst.name][1]:.0f} per_stage="
                + (",".join(f"{s['stage'] or 'train'}:{s['epochs']}x{s['seconds'] / s['epochs']:.1f}s"
                            for s in stage_records(record)) or "reused")
                + f" projected_cpu_s={projected:.0f}")
        if inst.name in full:  # measured in full beats projected
            wall[inst.name], cpu[inst.name] = full[inst.name]
            line += (f" measured_cpu_s={cpu[inst.name]:.0f} projected_over_measured={projected / cpu[inst.name]:.3f}"
                     f" source=measured")
        else:
            wall[inst.name] += extra
            cpu[inst.name] = projected
            line += " source=projected"
        print(line)
    print(f"stages={len(insts)} in_run={len(cpu)}")
    for verb, names in by_verb.items():
        print(f"verb={verb} stages={len(names)} cpu_s={sum(cpu[n] for n in names):.0f} "
              f"wall_s={sum(wall[n] for n in names):.0f}")
    print(f"total_cpu_s={sum(cpu.values()):.0f} total_cpu_h={sum(cpu.values()) / 3600:.2f}")
    jobs = a.jobs or int(params["grid"]["jobs"])
    span = simulate(insts, {n: min(wall[n], cpu[n]) for n in cpu}, jobs)  # a stage not in the run counts 0 s
    missing = [i.name for i in insts if i.name not in cpu]
    if missing:
        print(f"not_in_run={len(missing)} first={','.join(missing[:3])}")
        print(f"jobs={jobs} simulated_wall_s_at_least={span:.0f} (the stages not in the run counted as 0 s)")
    else:
        print(f"jobs={jobs} simulated_wall_s={span:.0f} simulated_wall_h={span / 3600:.2f}")


if __name__ == "__main__":
    main()
