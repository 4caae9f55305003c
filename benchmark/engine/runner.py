"""Training any registered method, on mmengine's Runner.

What mmengine provides and we use as is: the epoch loop (``train_cfg``), the optimiser wrapper
and parameter schedulers (built from the stage's recipe, ``engine.optim``), the seeded sampler
(``engine.loaders``), per-epoch checkpointing (``CheckpointHook``), automatic resume from the
last checkpoint (``resume=True``), logging and seeding (``randomness``). What we add:
``engine.model`` (a Method as a ``BaseModel``), ``engine.checkpoint`` (checkpoints that load
with ``weights_only=True``) and ``engine.hooks`` (progress bar, per-epoch reseeding, the
per-epoch history) and ``engine.validate`` (per-epoch validation AUC through mmengine's
``ValLoop``; ``train.select`` picks the last or the best-validation checkpoint).

``train`` runs a method's ``training_stages`` in order, each its own resumable Runner, and
writes ``model.pt`` (the method's tensors only), ``train.json`` and ``history.csv``.

How it computes (``engine.device``, ``engine.distributed``): on the ``device`` and under the
``launcher`` passed in (params.yaml's top-level keys: one process, or data-parallel under
torchrun or srun, where only rank 0 writes), at params.yaml ``train``'s precision ``amp``,
optionally ``channels_last``, ``deterministic`` or not. ``train.json`` records it under
``compute`` (device, amp, launcher, world size, deterministic, the ops that had no
deterministic kernel).

Nothing trained is ever deleted by a run: training happens in a partial directory beside the
work dir, keyed by the configuration's fingerprint (``partial_dir``), and resumes there after an
interruption; only a completed run is swapped in for the work dir (``benchmark.io.swap_dir``),
replacing what was there at that moment. A work dir that already holds a completed run of the
same fingerprint is reused as is. Checkpoint writes are atomic (``engine.checkpoint``) and a
stage resumes from its newest checkpoint that loads. A diverging training (``engine.guards``)
stops at that step; the method keeps its last good state (the stage's last checkpoint, else the
state the stage started from), later stages are skipped, and ``train.json`` records
``diverged`` {stage, epoch, iteration, what, kept}.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import time
from pathlib import Path

import pandas as pd
import torch
from mmengine.runner import Runner

from benchmark import io
from benchmark.engine import device as dev
from benchmark.engine import adopt, distributed, optim, validate
from benchmark.engine.checkpoint import latest_checkpoint, load_state, method_state, prune_checkpoints
from benchmark.engine.guards import Diverged, DivergenceGuard
from benchmark.engine.hooks import read_history
from benchmark.engine.loaders import train_loader
from benchmark.engine.model import MethodModel
from benchmark.errors import UserError

_RUNS = itertools.count()  # mmengine keys global loggers/visualizers by experiment name


def train(method, dataset, work_dir: Path, cfg: dict, seed: int, levels=None, fingerprint: str = "",
          device="auto", launcher: str = "none", val_data=None, given: dict | None = None) -> dict:
    """Train ``method`` on ``dataset`` (a ``TrainFrames``) into ``work_dir``.

    ``cfg`` is params.yaml ``train``; ``device`` and ``launcher`` are params.yaml's top-level keys
    (``engine.device``, ``engine.distributed``); ``val_data`` (frames with ``image`` and ``label``,
    or None) is scored after every epoch (``engine.validate``). Trains in ``partial_dir(work_dir, fingerprint)``,
    resuming from its last checkpoints, and swaps it in for ``work_dir`` once complete (module
    docstring); writes ``model.pt`` (the method's tensors only, on the CPU), ``train.json`` and
    ``history.csv``. A method with several ``training_stages`` runs each as its own Runner
    under ``<dir>/<stage>/`` (see ``run_stages``); ``given`` ({stage: ``adopt.FinishedStage``})
    names first stages taken from another training instead of trained (``engine.adopt``).
    """
    work_dir = Path(work_dir)
    select = validate.check_select(cfg.get("select", "last"), val_data is not None)
    stage_picks(method, cfg, val_data is not None)  # a bad choice stops here, before anything is touched
    given = dict(given or {})
    adopt.check_prefix(given, [n for n, _ in method.training_stages(cfg["epochs"])])
    target = distributed.init(launcher, device)
    dev.amp_dtype(cfg.get("amp", "none"), target)  # what cannot run fails before anything is touched
    for name, epochs in method.training_stages(cfg["epochs"]):
        _local_batch(optim.stage_recipe(method, name, {**cfg, "epochs": epochs})["batch_size"])
    done = completed(work_dir, fingerprint)
    if done is not None:
        method.load_state_dict(io.load_tensors(work_dir / "model.pt", stage="the `train` stage again"))
        return done
    partial = partial_dir(work_dir, fingerprint)
    if distributed.is_main():
        if partial.exists() and _fingerprint(partial) != fingerprint:
            shutil.rmtree(partial)  # unmarked, or another fingerprint with the same name: never resume from it
        partial.mkdir(parents=True, exist_ok=True)
        io.write_json(partial / "run.json", {"fingerprint": fingerprint})
    distributed.barrier()
    dataset.seed = seed
    deterministic = bool(cfg.get("deterministic", True))
    dev.set_deterministic(deterministic, target)
    method.to(target)
    start = time.perf_counter()
    with dev.nondeterministic_ops() as skipped:
        stages = run_stages(method, dataset, partial, {**cfg, "device": target, "launcher": launcher}, seed, levels,
                            val_data, given)
    if select == "best_val" and "diverged" not in stages[-1]:  # ends with the last stage's best-validation epoch
        best = validate.best_checkpoint(stage_dirs(partial, [s["stage"] for s in stages])[-1])
        load_state(method, method_state(best), best)
        stages[-1]["ended_with"] = best.name
    summary = {
        "epochs": sum(s["epochs"] for s in stages), "iters": sum(s["iters"] for s in stages),
        "seconds": round(time.perf_counter() - start, 1), "final_loss": stages[-1]["final_loss"],
        "provenance": method.provenance(), "fingerprint": fingerprint,
        "recipe": {s["stage"]: s["recipe"] for s in stages},
        "compute": {"device": dev.describe(target), "amp": str(cfg.get("amp", "none")),
                    "channels_last": bool(cfg.get("channels_last", False)),
                    "launcher": str(launcher), "world_size": distributed.world_size(),
                    "deterministic": deterministic, "nondeterministic_ops": list(skipped),
                    "numerics": dev.numerics()},
    }
    if len(method.training_stages(cfg["epochs"])) > 1:  # (a divergence may have stopped before the last)
        summary["stages"] = stages
    if "diverged" in stages[-1]:
        summary["diverged"] = stages[-1]["diverged"]
    if distributed.is_main():
        for s, d in zip(stages, stage_dirs(partial, [s["stage"] for s in stages])):
            prune_checkpoints(d, keep_all=s["keep_all"])
        state = method.state_dict()  # keeps torch's _metadata (module versions)
        state.update((k, v.cpu()) for k, v in state.items())
        io.save_tensors(partial / "model.pt", state)
        io.write_csv(partial / "history.csv", history(partial, [s["stage"] for s in stages]))
        io.write_json(partial / "train.json", summary)
        io.swap_dir(partial, work_dir)
    distributed.barrier()
    return summary


def partial_dir(work_dir: Path, fingerprint: str) -> Path:
    """Where a run of ``fingerprint`` trains until it completes: ``.<work dir>.partial-<fp>``
    beside the work dir (same file system, so the swap is a rename)."""
    tag = re.sub(r"[^A-Za-z0-9_-]", "_", str(fingerprint))[:64] or "none"
    return Path(work_dir).parent / f".{Path(work_dir).name}.partial-{tag}"


def _fingerprint(d: Path):
    try:
        return json.loads((d / "run.json").read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def completed(work_dir: Path, fingerprint: str) -> dict | None:
    """The ``train.json`` of a completed run of ``fingerprint`` in ``work_dir``, else None."""
    record, model = Path(work_dir) / "train.json", Path(work_dir) / "model.pt"
    if not (record.is_file() and model.is_file()):
        return None
    summary = io.read_json(record, "the `train` stage again")
    return summary if summary.get("fingerprint") == fingerprint else None


def stage_dirs(work_dir: Path, names: list[str]) -> list[Path]:
    """Where each stage trains: ``work_dir`` itself for one stage, ``work_dir/<name>`` for several."""
    return [Path(work_dir)] if len(names) == 1 else [Path(work_dir) / n for n in names]


def history(work_dir: Path, names: list[str]) -> pd.DataFrame:
    """Every stage's per-epoch rows (``engine.hooks.HistoryHook``), in training order."""
    rows = [{"stage": n, **r} for n, d in zip(names, stage_dirs(work_dir, names))
            for r in sorted(read_history(d).values(), key=lambda r: r["epoch"])]
    return pd.DataFrame(rows)


def run_stages(method, dataset, work_dir: Path, cfg: dict, seed: int, levels=None, val_data=None,
               given: dict | None = None) -> list[dict]:
    """Run ``method.training_stages(cfg["epochs"])`` in order, each its own resumable Runner.

    Before a stage ``method.set_stage(name)`` freezes what it does not train; the optimiser holds
    only the parameters left trainable. A later stage starts from the previous stage's checkpoint
    that ``method.stage_checkpoint(name)`` names (an epoch number -- then the previous stage keeps
    every epoch's checkpoint --, ``last`` or ``best_val``), or, when it names none, the one
    ``train.select`` names; a stage with its own checkpoint resumes from that instead. A stage in
    ``given`` is adopted, not trained (``engine.adopt``): the next one loads its pick from it, its
    own (trainable) modules may differ from the adopted ones, the frozen rest must match.
    """
    given = given or {}
    plan = method.training_stages(cfg["epochs"])
    dirs = stage_dirs(work_dir, [n for n, _ in plan])
    picks = stage_picks(method, cfg, val_data is not None)
    out = []
    for i, (name, epochs) in enumerate(plan):
        keep_all = i + 1 < len(plan) and isinstance(picks[i + 1], int)
        if name in given:
            if distributed.is_main():
                adopt.adopt(given[name], dirs[i])
            distributed.barrier()
            out.append({**given[name].summary, "stage": name, "keep_all": keep_all,
                        "adopted_from": str(given[name].dir)})
            continue
        method.set_stage(name)
        start = None
        after_adopted = i > 0 and plan[i - 1][0] in given
        if i > 0 and (picks[i] != "last" or after_adopted):
            ckpt = validate.checkpoint_for(dirs[i - 1], picks[i])
            load_state(method, method_state(ckpt), ckpt, own=trained_here(method) if after_adopted else ())
            start = ckpt.name
        recipe = optim.stage_recipe(method, name, {**cfg, "epochs": epochs})
        out.append({"stage": name, "recipe": recipe, "keep_all": keep_all,
                    "started_from": start or ("last" if i else None),
                    **_run_one(method, dataset, dirs[i], cfg, recipe, seed, levels, keep_all, name, val_data)})
        if "diverged" in out[-1]:
            break  # later stages would start from a diverged model
    return out


def trained_here(method) -> set[str]:
    """State keys of the modules this stage trains (their parameters and buffers)."""
    modules = {n.rpartition(".")[0] for n, p in method.named_parameters() if p.requires_grad}
    return {k for k in method.state_dict() if k.rpartition(".")[0] in modules}


def stage_picks(method, cfg: dict, validated: bool) -> list:
    """Per stage, the previous stage's checkpoint it starts from: the method's
    ``stage_checkpoint(name)`` (an epoch number, ``last`` or ``best_val``), else ``train.select``."""
    select, plan = cfg.get("select", "last"), method.training_stages(cfg["epochs"])
    picks = []
    for i, (name, _) in enumerate(plan):
        pick = method.stage_checkpoint(name)
        pick = select if pick is None else pick
        if isinstance(pick, int) and i > 0 and not 1 <= pick <= plan[i - 1][1]:
            raise UserError(f"stage {name} should start from epoch_{pick}.pth of stage {plan[i - 1][0]}, which "
                            f"trains epochs 1..{plan[i - 1][1]}; choose one of them, 'last' or 'best_val'")
        if not isinstance(pick, int):
            validate.check_select(pick, validated)
        picks.append(pick)
    return picks


def _run_one(method, dataset, work_dir: Path, cfg: dict, recipe: dict, seed: int, levels, keep_all: bool,
             stage: str = "train", val_data=None) -> dict:
    """One stage's Runner; ``cfg["device"]`` is the resolved device (``train`` sets it)."""
    device = torch.device(cfg.get("device", "cpu"))
    if cfg.get("channels_last"):
        dev.channels_last(method)
    distributed.sync_batchnorm(method, device, bool(cfg.get("sync_bn", True)))
    loader = train_loader(dataset, _local_batch(recipe["batch_size"]), cfg, seed, device)
    resume_from = latest_checkpoint(work_dir, method)  # newest epoch checkpoint, checked; None: start
    start_state = {k: v.detach().clone() for k, v in method.state_dict().items()}
    val = cfg.get("val") or {}
    runner = Runner(
        model=distributed.MethodParallel(MethodModel(method, levels, bool(cfg.get("channels_last"))).to(device)),
        work_dir=str(work_dir),
        train_dataloader=loader,
        train_cfg=dict(by_epoch=True, max_epochs=int(recipe["epochs"])),
        optim_wrapper=optim.optim_wrapper(method, recipe, cfg.get("amp", "none"), device),
        param_scheduler=recipe["param_scheduler"] or None,
        # two kept while training, so a kill between mmengine's delete of the older and the
        # write of the newer still leaves one; train() prunes to the last at the end
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1, max_keep_ckpts=-1 if keep_all else 2,
                                           **validate.checkpoint_cfg(val_data is not None)),
                           logger=dict(type="LoggerHook", interval=max(1, len(loader) // 4))),
        custom_hooks=[dict(type="PlainCheckpointHook"), dict(type="EpochSeedHook", seed=seed),
                      dict(type="HistoryHook"), dict(type="ProgressHook"),
                      dict(type="TrainProgressHook"), DivergenceGuard(stage), *validate.hooks(val_data is not None)],
        randomness=dict(seed=seed),  # determinism: engine.device.set_deterministic (train)
        launcher=str(cfg.get("launcher", "none")),
        resume=resume_from is not None,
        load_from=str(resume_from) if resume_from is not None else None,
        log_level="WARNING",  # the per-iteration losses still go to work_dir/<timestamp>/*.log
        default_scope="mmengine",
        # unique per Runner: the default (a timestamp) makes two runs started in the
        # same second share a visualizer that writes into the first run's directory
        experiment_name=f"{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}_{next(_RUNS)}",
        **validate.runner_kwargs(val_data, val.get("batch_size", 64)),
    )
    start = time.perf_counter()
    out = {}
    try:
        runner.train()
    except Diverged as d:
        last = latest_checkpoint(work_dir)
        method.load_state_dict(method_state(last) if last is not None else start_state)
        runner.call_hook("after_train")  # closes the progress bar
        out["diverged"] = {**d.info, "kept": f"epoch {last.stem.split('_')[1]} of stage {stage}" if last is not None
                           else f"the state stage {stage} started from (no epoch of it completed)"}
    return {"epochs": int(recipe["epochs"]), "iters": runner.iter, "seconds": round(time.perf_counter() - start, 1),
            "final_loss": _last_loss(work_dir), **out}


def _local_batch(batch_size) -> int:
    """Each process's share of a stage's (global) batch size."""
    batch, world = int(batch_size), distributed.world_size()
    if batch % world:
        raise UserError(f"batch size {batch} does not split over {world} processes; choose a multiple of "
                        f"the process count (train.batch_size is the global batch)")
    return batch // world


def _last_loss(stage_dir: Path) -> float:
    """The mean training loss of the stage's last finished epoch (its history), so a stage
    resumed after an interruption reports what an uninterrupted one does; NaN when none finished."""
    rows = read_history(stage_dir)
    last = max(rows.values(), key=lambda r: r["epoch"]) if rows else {}
    return float(last.get("train_loss", float("nan")))
