"""Training any registered method, on mmengine's Runner.

What mmengine provides and we use as is: the epoch loop (``train_cfg``), the optimiser wrapper
and parameter schedulers (built from the stage's recipe, ``engine.optim``), the seeded sampler
(``engine.loaders``), per-epoch checkpointing (``CheckpointHook``), automatic resume from the
last checkpoint (``resume=True``), logging and seeding (``randomness``). What we add:
``engine.model`` (a Method as a ``BaseModel``), ``engine.checkpoint`` (checkpoints that load
with ``weights_only=True``) and ``engine.hooks`` (progress bar, per-epoch reseeding, the
per-epoch history).

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
from benchmark.engine import optim
from benchmark.engine.checkpoint import method_state
from benchmark.engine.hooks import read_history
from benchmark.engine.loaders import train_loader
from benchmark.engine.model import MethodModel
from benchmark.errors import UserError

_RUNS = itertools.count()  # mmengine keys global loggers/visualizers by experiment name


def train(method, dataset, work_dir: Path, cfg: dict, seed: int, levels=None, fingerprint: str = "") -> dict:
    """Train ``method`` on ``dataset`` (a ``TrainFrames``) into ``work_dir``.

    ``cfg`` is params.yaml ``train``. Resumes from ``work_dir``'s last checkpoint when one
    exists for the same ``fingerprint``; writes ``model.pt`` (the method's tensors only),
    ``train.json`` and ``history.csv`` at the end. A method with several ``training_stages``
    runs each as its own Runner under ``work_dir/<stage>/`` (see ``run_stages``).
    """
    work_dir = Path(work_dir)
    run_file = work_dir / "run.json"
    if work_dir.exists() and (not run_file.is_file() or json.loads(run_file.read_text()).get("fingerprint") != fingerprint):
        shutil.rmtree(work_dir)  # a different configuration: never resume from it
    work_dir.mkdir(parents=True, exist_ok=True)
    io.write_json(run_file, {"fingerprint": fingerprint})
    dataset.seed = seed
    start = time.perf_counter()
    stages = run_stages(method, dataset, work_dir, cfg, seed, levels)
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


def run_stages(method, dataset, work_dir: Path, cfg: dict, seed: int, levels=None) -> list[dict]:
    """Run ``method.training_stages(cfg["epochs"])`` in order, each its own resumable Runner.

    Before a stage ``method.set_stage(name)`` freezes what it does not train; the optimiser holds
    only the parameters left trainable. A later stage starts from the previous stage's last
    epoch, or from the epoch ``method.stage_checkpoint(name)`` names (then the previous stage
    keeps every epoch's checkpoint); a stage with its own checkpoint resumes from that instead.
    """
    plan = method.training_stages(cfg["epochs"])
    dirs = stage_dirs(work_dir, [n for n, _ in plan])
    out = []
    for i, (name, epochs) in enumerate(plan):
        nxt = plan[i + 1][0] if i + 1 < len(plan) else None
        keep_all = nxt is not None and method.stage_checkpoint(nxt) is not None
        method.set_stage(name)
        pick = method.stage_checkpoint(name)
        if i > 0 and pick is not None:
            ckpt = dirs[i - 1] / f"epoch_{pick}.pth"
            if not ckpt.is_file():
                raise UserError(f"stage {name} should start from {ckpt}, which does not exist; "
                                f"choose an epoch of stage {plan[i - 1][0]} (1..{plan[i - 1][1]}) or 'last'")
            method.load_state_dict(method_state(ckpt))
        recipe = optim.stage_recipe(method, name, {**cfg, "epochs": epochs})
        out.append({"stage": name, "recipe": recipe,
                    **_run_one(method, dataset, dirs[i], cfg, recipe, seed, levels, keep_all)})
    return out


def _run_one(method, dataset, work_dir: Path, cfg: dict, recipe: dict, seed: int, levels, keep_all: bool) -> dict:
    loader = train_loader(dataset, recipe["batch_size"], cfg, seed)
    runner = Runner(
        model=MethodModel(method, levels),
        work_dir=str(work_dir),
        train_dataloader=loader,
        train_cfg=dict(by_epoch=True, max_epochs=int(recipe["epochs"])),
        optim_wrapper=optim.optim_wrapper(method, recipe),
        param_scheduler=recipe["param_scheduler"] or None,
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1, max_keep_ckpts=-1 if keep_all else 1),
                           logger=dict(type="LoggerHook", interval=max(1, len(loader) // 4))),
        custom_hooks=[dict(type="PlainCheckpointHook"), dict(type="EpochSeedHook", seed=seed),
                      dict(type="HistoryHook"), dict(type="ProgressHook"),
                      dict(type="TrainProgressHook")],
        randomness=dict(seed=seed, deterministic=True),
        resume=True,
        log_level="WARNING",  # the per-iteration losses still go to work_dir/<timestamp>/*.log
        default_scope="mmengine",
        # unique per Runner: the default (a timestamp) makes two runs started in the
        # same second share a visualizer that writes into the first run's directory
        experiment_name=f"{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}_{next(_RUNS)}",
    )
    start = time.perf_counter()
    runner.train()
    return {"epochs": int(recipe["epochs"]), "iters": runner.iter, "seconds": round(time.perf_counter() - start, 1),
            "final_loss": _last_loss(runner)}


def _last_loss(runner) -> float:
    """The last logged training loss; NaN when the stage was already complete (nothing ran)."""
    scalar = runner.message_hub.log_scalars.get("train/loss")
    return float(scalar.current()) if scalar is not None else float("nan")
