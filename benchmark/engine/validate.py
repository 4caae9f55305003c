"""Validation during training, through mmengine's own validation loop, usable by every method.

After every epoch of every stage the Runner's ``ValLoop`` scores the val frames (the model's
``predict`` mode: P(fake), with the indicator levels computed on the very image, as in
training) and ``AUCMetric`` reduces them to the frame-level ROC AUC. ``HistoryHook`` writes it
as ``val_auc`` into ``history.csv``, and mmengine's ``CheckpointHook(save_best="auc")`` keeps
the best epoch's checkpoint (``best_auc_epoch_<E>.pth``; ties keep the earlier epoch), which
``train.select: best_val`` (or a method's ``stage_checkpoint``) picks.

A stage resumed from ``epoch_<E>.pth`` validates epoch E again before training on
(``ResumeValidation``): mmengine writes that checkpoint before epoch E's validation, and again
after it only when E is a new best, so a kill during the validation or before the rewrite
leaves a checkpoint whose message hub knows the best of epochs 1..E-1 only (resumed as is,
epoch E's result is lost and the next epoch beats an empty record). Validating E again from
that hub repeats the uninterrupted run's sequence (same score, same best checkpoint kept, the
same ``val_auc`` row); after a rewrite it finds E no better than itself and changes nothing.
Best-validation files the resumed hub does not name (left by the killed run) are removed first.

Validation is deterministic: the val frames are un-augmented, read in manifest order, and
every method scores in eval mode; it consumes no random state that training reads (the engine
reseeds torch before every training epoch, ``EpochSeedHook``). params.yaml ``train.val``:
``quality`` (which quality's val split; null = the train set's), ``frames_per_video`` (null =
all extracted) and ``batch_size``; ``train.val: null`` switches validation off.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.registry import HOOKS, METRICS
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader

from benchmark.engine.distributed import is_main
from benchmark.errors import UserError

SELECT = ("last", "best_val")
METRIC = "auc"


@METRICS.register_module()
class AUCMetric(BaseMetric):
    """Frame-level ROC AUC of P(fake) against the batch's ``label`` (NaN with one class)."""

    default_prefix = None

    def process(self, data_batch, data_samples) -> None:
        labels = data_batch["label"].reshape(-1).tolist()
        scores = [float(s) for s in data_samples]
        self.results.extend(zip(labels, scores))

    def compute_metrics(self, results: list) -> dict:
        y, s = (np.asarray(v) for v in zip(*results)) if results else (np.zeros(0), np.zeros(0))
        return {METRIC: float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else math.nan}


@HOOKS.register_module()
class ResumeValidation(Hook):
    """On a resumed stage (``runner.epoch`` = E > 0 at ``before_train``), validate epoch E again
    (module docstring). Runs after ``CheckpointHook.before_train`` has read the resumed hub's
    best checkpoint; the next ``before_train_epoch`` reseeds torch, so the validation's use of
    the global generator (the loader's base seed) leaves training unchanged."""

    priority = "LOWEST"

    def before_train(self, runner) -> None:
        if runner.epoch == 0:
            return
        if is_main():
            keep = runner.message_hub.get_info("best_ckpt")
            for path in Path(runner.work_dir).glob(f"best_{METRIC}_epoch_*.pth"):
                if keep is None or path.resolve() != Path(keep).resolve():
                    path.unlink()
        runner.val_loop.run()


def hooks(validated: bool) -> list:
    """The Runner's extra hooks when validation runs."""
    return [dict(type="ResumeValidation")] if validated else []


def runner_kwargs(val_data, batch_size: int) -> dict:
    """The Runner's ``val_dataloader``/``val_cfg``/``val_evaluator`` (nothing when ``val_data`` is None)."""
    if val_data is None:
        return {}
    loader = DataLoader(val_data, batch_size=int(batch_size), shuffle=False, num_workers=0)
    return {"val_dataloader": loader, "val_cfg": {"type": "ValLoop"}, "val_evaluator": {"type": "AUCMetric"}}


def checkpoint_cfg(validated: bool) -> dict:
    """Extra ``CheckpointHook`` options: keep the best-validation epoch when validation runs."""
    return {"save_best": METRIC, "rule": "greater"} if validated else {}


def check_select(select: str, validated: bool) -> str:
    if select not in SELECT:
        raise UserError(f"train.select={select!r} is unknown; choose one of: {', '.join(SELECT)}")
    if select == "best_val" and not validated:
        raise UserError("train.select=best_val (or a method's best_val stage checkpoint) needs validation; "
                        "set train.val (quality, frames_per_video, batch_size) instead of null")
    return select


def best_checkpoint(stage_dir: Path) -> Path:
    """The best-validation checkpoint mmengine kept in ``stage_dir``."""
    found = sorted(Path(stage_dir).glob(f"best_{METRIC}_epoch_*.pth"))
    if len(found) != 1:
        raise UserError(f"{stage_dir} holds {len(found)} best-validation checkpoints (best_{METRIC}_epoch_*.pth), "
                        "not one: the val AUC was never defined (the val frames need reals and fakes) or the "
                        "stage did not finish; rerun the train stage")
    return found[0]


def checkpoint_for(stage_dir: Path, pick) -> Path:
    """The checkpoint of a finished stage that ``pick`` names: ``last``, ``best_val`` or an epoch number."""
    stage_dir = Path(stage_dir)
    if pick == "best_val":
        return best_checkpoint(stage_dir)
    if pick == "last":
        last = stage_dir / "last_checkpoint"
        if not last.is_file():
            raise UserError(f"{stage_dir} has no last_checkpoint; rerun the train stage")
        return stage_dir / Path(last.read_text().strip()).name
    path = stage_dir / f"epoch_{int(pick)}.pth"
    if not path.is_file():
        raise UserError(f"{path} does not exist; choose an epoch the previous stage kept, 'last' or 'best_val'")
    return path
