"""Stopping a training that diverges, at the step where it does.

``DivergenceGuard`` (an mmengine hook) checks after every iteration that the loss and every
floating tensor of the model (parameters and buffers, e.g. BatchNorm statistics) are finite.
The first time one is not, it raises ``Diverged`` with where it happened (stage, 1-based epoch
and iteration within the epoch) and what was not finite. The iteration's epoch never ends, so
its checkpoint is never written: the stage's last checkpoint on disk is the last good state,
and ``engine.train`` scores with it and records the divergence in ``train.json``.
"""
from __future__ import annotations

import math

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


class Diverged(Exception):
    def __init__(self, stage: str, epoch: int, iteration: int, iters_per_epoch: int, what: str):
        self.info = {"stage": stage, "epoch": epoch, "iteration": iteration, "what": what}
        super().__init__(f"stage {stage}, epoch {epoch}, iteration {iteration} of {iters_per_epoch}: {what}")


def first_non_finite(module: torch.nn.Module) -> str | None:
    """The name of the first parameter or floating buffer holding a NaN or inf, else None."""
    tensors = [(n, t) for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_floating_point()]
    if not tensors:
        return None
    ok = torch.stack([torch.isfinite(t).all() for _, t in tensors])  # one host sync, not one per tensor
    if bool(ok.all()):
        return None
    return tensors[int((~ok).nonzero()[0])][0]


@HOOKS.register_module()
class DivergenceGuard(Hook):
    priority = "VERY_HIGH"  # before the hooks that log or count the iteration

    def __init__(self, stage: str = ""):
        self.stage = stage

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        loss = (outputs or {}).get("loss")
        what = None
        if loss is not None and not math.isfinite(float(loss)):
            what = f"loss = {float(loss)}"
        else:
            model = getattr(runner.model, "module", runner.model)  # engine.distributed.MethodParallel
            bad = first_non_finite(getattr(model, "method", model))  # names as in model.pt
            what = f"{bad} is not finite" if bad else None
        if what:
            raise Diverged(self.stage, runner.epoch + 1, batch_idx + 1, len(runner.train_dataloader), what)
