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
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from pathlib import Path

import pandas as pd
from mmengine.runner import Runner

from benchmark import io
from benchmark.engine import optim, validate
from benchmark.engine.checkpoint import method_state
from benchmark.engine.hooks import read_history
from benchmark.engine.loaders import train_loader
from benchmark.engine.model import MethodModel
from benchmark.errors import UserError

_RUNS = itertools.count()  # mmengine keys global loggers/visualizers by experiment name


def train(method, dataset, work_dir: Path, cfg: dict, seed: int, levels=None, fingerprint: str = "",
          val_data=None) -> dict:
    """Train ``method`` on ``dataset`` (a ``TrainFrames``) into ``work_dir``.

    ``cfg`` is params.yaml ``train``; ``val_data`` (frames with ``image`` and ``label``, or None)
    is scored after every epoch (``engine.validate``). Resumes from ``work_dir``'s last checkpoint when one
    exists for the same ``fingerprint``; writes ``model.pt`` (the method's tensors only),
    ``train.json`` and ``history.csv`` at the end. A method with several ``training_stages``
    runs each as its own Runner under ``work_dir/<stage>/`` (see ``run_stages``).
    """
    work_dir = Path(work_dir)
    select = validate.check_select(cfg.get("select", "last"), val_data is not None)
    stage_picks(method, cfg, val_data is not None)  # a bad choice stops here, before anything is touched
    run_file = work_dir / "run.json"
    if work_dir.exists() and (not run_file.is_file() or json.loads(run_file.read_text()).get("fingerprint") != fingerprint):
        shutil.rmtree(work_dir)  # a different configuration: never resume from it
    work_dir.mkdir(parents=True, exist_ok=True)
    io.write_json(run_file, {"fingerprint": fingerprint})
    dataset.seed = seed
    start = time.perf_counter()
    stages = run_stages(method, dataset, work_dir, cfg, seed, levels, val_data)
    if select == "best_val":  # the training ends with the last stage's best-validation epoch
        best = validate.best_checkpoint(stage_dirs(work_dir, [s["stage"] for s in stages])[-1])
        method.load_state_dict(method_state(best))
        stages[-1]["ended_with"] = best.name
    summary = {
        "epochs": sum(s["epochs"] for s in stages), "iters": sum(s["iters"] for s in stages),
        "seconds": round(time.perf_counter() - start, 1), "final_loss": stages[-1]["final_loss"],
        "provenance": method.provenance(), "fingerprint": fingerprint,
        "recipe": {s["stage"]: s["recipe"] for s in stages},
    }
    if len(stages) > 1:
        summary["stages"] = stages
    io.save_tensors(work_dir / "model.pt", method.state_dict())
    io.write_csv(work_dir / "history.csv", history(work_dir, [s["stage"] for s in stages]))
    io.write_json(work_dir / "train.json", summary)
    return summary


def stage_dirs(work_dir: Path, names: list[str]) -> list[Path]:
    """Where each stage trains: ``work_dir`` itself for one stage, ``work_dir/<name>`` for several."""
    return [Path(work_dir)] if len(names) == 1 else [Path(work_dir) / n for n in names]


def history(work_dir: Path, names: list[str]) -> pd.DataFrame:
    """Every stage's per-epoch rows (``engine.hooks.HistoryHook``), in training order."""
    rows = [{"stage": n, **r} for n, d in zip(names, stage_dirs(work_dir, names))
            for r in sorted(read_history(d).values(), key=lambda r: r["epoch"])]
    return pd.DataFrame(rows)


def run_stages(method, dataset, work_dir: Path, cfg: dict, seed: int, levels=None, val_data=None) -> list[dict]:
    """Run ``method.training_stages(cfg["epochs"])`` in order, each its own resumable Runner.

    Before a stage ``method.set_stage(name)`` freezes what it does not train; the optimiser holds
    only the parameters left trainable. A later stage starts from the previous stage's checkpoint
    that ``method.stage_checkpoint(name)`` names (an epoch number -- then the previous stage keeps
    every epoch's checkpoint --, ``last`` or ``best_val``), or, when it names none, the one
    ``train.select`` names; a stage with its own checkpoint resumes from that instead.
    """
    plan = method.training_stages(cfg["epochs"])
    dirs = stage_dirs(work_dir, [n for n, _ in plan])
    picks = stage_picks(method, cfg, val_data is not None)
    out = []
    for i, (name, epochs) in enumerate(plan):
        keep_all = i + 1 < len(plan) and isinstance(picks[i + 1], int)
        method.set_stage(name)
        start = None
        if i > 0 and picks[i] != "last":
            ckpt = validate.checkpoint_for(dirs[i - 1], picks[i])
            method.load_state_dict(method_state(ckpt))
            start = ckpt.name
        recipe = optim.stage_recipe(method, name, {**cfg, "epochs": epochs})
        out.append({"stage": name, "recipe": recipe, "started_from": start or ("last" if i else None),
                    **_run_one(method, dataset, dirs[i], cfg, recipe, seed, levels, keep_all, val_data)})
    return out


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
             val_data=None) -> dict:
    loader = train_loader(dataset, recipe["batch_size"], cfg, seed)
    val = cfg.get("val") or {}
    runner = Runner(
        model=MethodModel(method, levels),
        work_dir=str(work_dir),
        train_dataloader=loader,
        train_cfg=dict(by_epoch=True, max_epochs=int(recipe["epochs"])),
        optim_wrapper=optim.optim_wrapper(method, recipe),
        param_scheduler=recipe["param_scheduler"] or None,
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1, max_keep_ckpts=-1 if keep_all else 1,
                                           **validate.checkpoint_cfg(val_data is not None)),
                           logger=dict(type="LoggerHook", interval=max(1, len(loader) // 4))),
        custom_hooks=[dict(type="PlainCheckpointHook"), dict(type="EpochSeedHook", seed=seed),
                      dict(type="HistoryHook"), dict(type="ProgressHook")],
        randomness=dict(seed=seed, deterministic=True),
        resume=True,
        log_level="WARNING",  # the per-iteration losses still go to work_dir/<timestamp>/*.log
        default_scope="mmengine",
        # unique per Runner: the default (a timestamp) makes two runs started in the
        # same second share a visualizer that writes into the first run's directory
        experiment_name=f"{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}_{next(_RUNS)}",
        **validate.runner_kwargs(val_data, val.get("batch_size", 64)),
    )
    start = time.perf_counter()
    runner.train()
    return {"epochs": int(recipe["epochs"]), "iters": runner.iter, "seconds": round(time.perf_counter() - start, 1),
            "final_loss": _last_loss(runner)}


def _last_loss(runner) -> float:
    """The last logged training loss; NaN when the stage was already complete (nothing ran)."""
    scalar = runner.message_hub.log_scalars.get("train/loss")
    return float(scalar.current()) if scalar is not None else float("nan")
