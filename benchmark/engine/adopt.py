"""Starting a training from a finished stage of another one.

A variant that differs from its base only in options of a later stage (DPL's stage-II options)
would train its first stages exactly as the base did (``Method.reused_stage``). Instead of
repeating them, ``train(..., given=...)`` takes them from the base: ``adopt`` links the stage's
checkpoints into the variant's stage dir (hard links where the file system has them: checkpoints
are written once and never edited in place, so a link cannot change the base's), writes its
``last_checkpoint`` and history there, and the engine records the stage's summary with
``adopted_from``. The next stage then starts from the checkpoint it picks in that dir, as it would
after training the stage itself; what it trains may differ from the base in shape (its own
modules), what it freezes must be the base's (``engine.checkpoint.load_state(own=...)``).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from benchmark import io
from benchmark.engine.checkpoint import epoch_checkpoints
from benchmark.engine.hooks import HISTORY
from benchmark.errors import UserError


@dataclass(frozen=True)
class FinishedStage:
    """A finished stage of another training: the dir holding its epoch (and best-validation)
    checkpoints, its entry of that training's ``train.json`` ``stages`` and its history rows."""
    dir: Path
    summary: dict
    history: list


def check_prefix(given: dict, names: list[str]) -> None:
    """The given stages must be the first ones, and not all of them (then the last one's
    checkpoint is the model: nothing is left to train)."""
    if given and (list(given) != names[:len(given)] or len(given) >= len(names)):
        raise ValueError(f"finished stages {list(given)} are not a proper prefix of the stages {names}")


def adopt(stage: FinishedStage, dst: Path) -> None:
    """Make ``dst`` hold ``stage`` as if it had been trained there (idempotent, for a resume)."""
    src = Path(stage.dir)
    ckpts = epoch_checkpoints(src)
    if not ckpts:
        raise UserError(f"no epoch checkpoint in {src}; retrain the training it belongs to")
    dst.mkdir(parents=True, exist_ok=True)
    for ckpt in [*ckpts, *sorted(src.glob("best_*_epoch_*.pth"))]:
        target = dst / ckpt.name
        if not target.exists():
            _link(ckpt, target)
    (dst / "last_checkpoint").write_text(str(dst / ckpts[-1].name))
    io.write_json(dst / HISTORY, {str(int(r["epoch"])): r for r in stage.history})


def _link(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # another file system, or links not allowed: a copy
        shutil.copyfile(src, tmp)
    tmp.replace(dst)
