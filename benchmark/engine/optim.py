"""What a training stage optimises with: its recipe, and mmengine's optimiser wrapper and
parameter schedulers built from it.

A recipe is a dict with the keys ``RECIPE_KEYS``:

- ``optimizer``: an mmengine ``OPTIMIZERS`` config (``{type: Adam, lr: 1e-3, weight_decay: 0}``);
- ``param_scheduler``: a list of mmengine parameter-scheduler configs (empty = constant lr);
  a scheduler without ``end`` ends with the stage (``end`` = the stage's epochs, so a one-cycle
  schedule spans the whole stage whatever its length);
- ``batch_size``, ``epochs``: of the stage (``epochs`` of a later stage is the method's own,
  see ``Method.training_stages``);
- ``clip_grad``: mmengine's ``clip_grad`` of the optimiser wrapper (e.g. ``{max_norm: 1.0}``)
  or None.

``train.recipe`` chooses where a stage's recipe comes from: ``shared`` (every method trains
with params.yaml ``train``'s keys) or ``own`` (the method's ``Method.stage_recipe(stage)``, the
original's settings, over the shared ones for the keys it does not set). ``train.recipe_epochs``
chooses, under ``own``, whose epoch count a stage runs: ``shared`` (params.yaml ``train.epochs``,
the default: the originals train 5-32 epochs of FF++, which the CPU grid cannot afford for every
method) or ``own`` (the original's). Whatever the source,
keys a method's own options fix for a stage (``Method.recipe_overrides(stage)``, e.g. DPL's
``stage2_optimizer``) are applied last. The recipe a stage ran with, with ``source`` (``shared``
or ``own``), is written into ``train.json`` (``engine.train``); ``describe`` is its one-line form
for the report's provenance.

``optim_wrapper(method, recipe, amp, device)`` builds mmengine's ``OptimWrapper`` (``amp: none``)
or its ``AmpOptimWrapper`` (``bf16``/``fp16``, params.yaml ``train.amp``: the forward runs under
``torch.autocast`` of the training device; fp16 scales the loss with CUDA's dynamic
``GradScaler``, bf16 needs no scaling). Both average the gradients over the data-parallel ranks
after every ``backward`` (``engine.distributed.GradSync``), so a method that owns its step (QAD,
DPL's stage II) keeps it: it calls ``update_params`` or ``backward``/``step``/``zero_grad``.
"""
from __future__ import annotations

import contextlib

import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIMIZERS

from benchmark.engine import device as dev
from benchmark.engine.distributed import GradSync
from benchmark.errors import UserError

RECIPE_KEYS = ("optimizer", "param_scheduler", "batch_size", "epochs", "clip_grad")
SOURCES = ("shared", "own")


def shared_recipe(cfg: dict) -> dict:
    """The recipe params.yaml ``train`` gives every method."""
    return {"optimizer": dict(cfg["optimizer"]), "param_scheduler": list(cfg.get("param_scheduler") or []),
            "batch_size": int(cfg["batch_size"]), "epochs": int(cfg["epochs"]), "clip_grad": cfg.get("clip_grad")}


def _choice(cfg: dict, key: str) -> str:
    value = cfg.get(key, "shared")
    if value not in SOURCES:
        raise UserError(f"train.{key}={value!r} is unknown; choose one of: {', '.join(SOURCES)}")
    return value


def stage_recipe(method, stage: str, cfg: dict) -> dict:
    """The recipe of ``method``'s training ``stage`` under params.yaml ``train`` (``cfg``), plus
    ``source``: where it came from (``shared`` or ``own``)."""
    source, epochs_from = _choice(cfg, "recipe"), _choice(cfg, "recipe_epochs")
    recipe = shared_recipe(cfg)
    own = dict(method.stage_recipe(stage)) if source == "own" else {}
    if own and epochs_from == "shared":
        own.pop("epochs", None)
    for hook, part in [("stage_recipe", own), ("recipe_overrides", method.recipe_overrides(stage))]:
        unknown = sorted(set(part) - set(RECIPE_KEYS))
        if unknown:
            raise UserError(f"{type(method).__name__}.{hook}({stage!r}) has unknown keys {unknown}; "
                            f"a recipe has {', '.join(RECIPE_KEYS)}")
        recipe.update(part)
    recipe["param_scheduler"] = [{"end": int(recipe["epochs"]), **s} for s in recipe["param_scheduler"] or []]
    recipe["source"] = source
    return recipe


def describe(recipe: dict) -> str:
    """One line for the report: ``own: Adam lr 0.0002, wd 0.0005, OneCycleLR, batch 64, 10 epochs``."""
    opt = recipe.get("optimizer") or {}
    parts = [f"{opt.get('type', '?')} lr {opt.get('lr', '?')}"]
    if opt.get("weight_decay"):
        parts.append(f"wd {opt['weight_decay']}")
    parts += [s.get("type", "?") for s in recipe.get("param_scheduler") or []]
    if recipe.get("clip_grad"):
        parts.append(f"clip {recipe['clip_grad']}")
    parts += [f"batch {recipe.get('batch_size', '?')}", f"{recipe.get('epochs', '?')} epochs"]
    return f"{recipe.get('source', 'shared')}: " + ", ".join(str(p) for p in parts)


class SyncedOptimWrapper(GradSync, OptimWrapper):
    """mmengine's ``OptimWrapper``, gradients averaged over the ranks after each backward."""


class SyncedAmpOptimWrapper(GradSync, AmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper`` on the training device, gradients averaged over the ranks.

    mmengine's constructor refuses a machine without CUDA and its ``optim_context`` autocasts on
    whatever ``mmengine.device.get_device()`` says; here the device is the one training runs on
    (so CPU bf16 works and ``device=cpu`` on a GPU machine stays on the CPU). Loss scaling:
    CUDA's dynamic ``GradScaler`` for fp16, disabled (a pass-through) for bf16.
    """

    def __init__(self, dtype: torch.dtype, device: torch.device, **kwargs):
        OptimWrapper.__init__(self, **kwargs)  # skips AmpOptimWrapper's CUDA-only assertion
        self._scale_update_param = None
        self.cast_dtype, self.device = dtype, torch.device(device)
        self.loss_scaler = torch.amp.GradScaler(self.device.type, enabled=dtype == torch.float16)

    @contextlib.contextmanager
    def optim_context(self, model):
        with OptimWrapper.optim_context(self, model), torch.autocast(self.device.type, dtype=self.cast_dtype):
            yield


def optim_wrapper(method, recipe: dict, amp: str = "none", device=None) -> OptimWrapper:
    """The optimiser wrapper over the parameters ``method`` leaves trainable in this stage,
    at precision ``amp`` (params.yaml ``train.amp``) on ``device``."""
    params = [p for p in method.parameters() if p.requires_grad]
    kwargs = _wrapper_kwargs(params, recipe)
    device = torch.device(device or "cpu")
    dtype = dev.amp_dtype(amp, device)
    return SyncedOptimWrapper(**kwargs) if dtype is None else SyncedAmpOptimWrapper(dtype, device, **kwargs)


def _wrapper_kwargs(params: list, recipe: dict) -> dict:
    optimizer = OPTIMIZERS.build({**recipe["optimizer"], "params": params})
    return {"optimizer": optimizer, "clip_grad": recipe.get("clip_grad") or None}


def check_recipe(recipe: dict, where: str) -> None:
    """Build ``recipe``'s optimiser wrapper and parameter schedulers once over a dummy parameter,
    so that an option the optimiser or a scheduler refuses is one UserError (naming ``where``,
    e.g. ``train`` or the method's own recipe) before any training starts."""
    from mmengine.registry import PARAM_SCHEDULERS
    try:
        wrapper = OptimWrapper(**_wrapper_kwargs([torch.nn.Parameter(torch.zeros(1))], recipe))
        for cfg in recipe["param_scheduler"]:  # by_epoch units need no data to be checked
            PARAM_SCHEDULERS.build({**{k: v for k, v in cfg.items() if k != "convert_to_iter_based"},
                                    "optimizer": wrapper})
    except Exception as e:  # noqa: BLE001 - whatever torch or mmengine refuses is the user's setting
        raise UserError(f"{where}: the optimiser or a parameter scheduler refused its settings "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None

