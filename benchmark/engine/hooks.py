"""mmengine hooks the engine adds to every Runner.

* ``ProgressHook``: a tqdm bar over all iterations with the running loss (mmengine logs only
  warnings at the level the engine sets); rank 0 only.
* ``EpochSeedHook``: reseeds torch's global generator at every epoch from (seed, epoch) and, in a
  data-parallel run, the rank (rank 0 keeps the one-process stream), so a run resumed after an
  interruption is bit-identical to an uninterrupted one. The dataset's augmentation is seeded by
  (seed, epoch, index) through the sampler (``engine.loaders``). It tells the method the epoch
  (``Method.set_epoch``).
* ``TrainProgressHook``: tells the method, before every iteration, where training stands
  (``Method.on_train_iter``: iteration within the stage, its total, iterations per epoch).
* ``HistoryHook``: one row per finished epoch (1-based) in ``<work_dir>/history.json``: mean
  training loss, learning rate, seconds, and the metrics of a validation run after that epoch
  (mmengine's ``after_val_epoch``, prefixed ``val_``). Rows are keyed by epoch, so a resumed
  stage keeps the rows of the epochs before the interruption and a redone epoch replaces its row
  (written by rank 0). ``engine.train``
  gathers every stage's rows into the model directory's ``history.csv`` (docs/CONTRACTS.md).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from benchmark import io
from benchmark.engine.distributed import is_main, rank

HISTORY = "history.json"


@HOOKS.register_module()
class ProgressHook(Hook):
    def before_train(self, runner) -> None:
        from tqdm import tqdm
        self.bar = tqdm(total=runner.max_iters, initial=runner.iter, desc="train", unit="it", leave=False,
                        disable=not is_main())

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.bar.update(1)
        self.bar.set_postfix(epoch=runner.epoch + 1, loss=f"{float(outputs['loss']):.4f}")

    def after_train(self, runner) -> None:
        self.bar.close()


@HOOKS.register_module()
class EpochSeedHook(Hook):
    def __init__(self, seed: int):
        self.seed = seed

    def before_train_epoch(self, runner) -> None:
        torch.manual_seed(self.seed * 100_003 + runner.epoch + 1_000_003 * rank())
        # The one draw torch's DataLoader took from this generator for its workers' base seed
        # when it built the epoch's iterator, before the loader got a generator of its own
        # (engine.loaders): kept, so runs reproduce the numbers of earlier versions bit for bit.
        torch.empty((), dtype=torch.int64).random_()
        getattr(runner.model, "module", runner.model).method.set_epoch(runner.epoch)


@HOOKS.register_module()
class TrainProgressHook(Hook):
    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        model = getattr(runner.model, "module", runner.model)  # unwrap a distributed wrapper
        model.method.on_train_iter(runner.iter, runner.max_iters, len(runner.train_dataloader))


@HOOKS.register_module()
class HistoryHook(Hook):
    priority = "LOW"  # after the optimiser and the parameter schedulers

    def before_train_epoch(self, runner) -> None:
        self._sum, self._n, self._start = 0.0, 0, time.perf_counter()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._sum += float(outputs["loss"])
        self._n += 1

    def after_train_epoch(self, runner) -> None:
        epoch = runner.epoch + 1  # mmengine counts the epoch done only after this hook
        lr = runner.optim_wrapper.get_lr()["lr"][0]
        self._update(runner, epoch, {"iters": self._n, "train_loss": self._sum / self._n if self._n else math.nan,
                                     "lr": float(lr), "seconds": round(time.perf_counter() - self._start, 2)})

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._update(runner, runner.epoch, {f"val_{k}": float(v) for k, v in (metrics or {}).items()})

    @staticmethod
    def _update(runner, epoch: int, values: dict) -> None:
        if not is_main():
            return
        rows = read_history(Path(runner.work_dir))
        rows[str(epoch)] = {**rows.get(str(epoch), {}), "epoch": epoch, **values}
        io.write_json(Path(runner.work_dir) / HISTORY, rows)


def read_history(stage_dir: Path) -> dict:
    path = Path(stage_dir) / HISTORY
    return io.read_json(path, "the `train` stage (its history was damaged)") if path.is_file() else {}
