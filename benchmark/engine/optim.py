"""What a training stage optimises with: its recipe, and mmengine's optimiser wrapper and
parameter schedulers built from it.

A recipe is a dict with the keys ``RECIPE_KEYS``:

- ``optimizer``: an mmengine ``OPTIMIZERS`` config (``{type: Adam, lr: 1e-3, weight_decay: 0}``);
- ``param_scheduler``: a list of mmengine parameter-scheduler configs (empty = constant lr);
- ``batch_size``, ``epochs``: of the stage (``epochs`` of a later stage is the method's own,
  see ``Method.training_stages``);
- ``clip_grad``: mmengine's ``clip_grad`` of the optimiser wrapper (e.g. ``{max_norm: 1.0}``)
  or None.

``train.recipe`` chooses where a stage's recipe comes from: ``shared`` (every method trains
with params.yaml ``train``'s keys) or ``own`` (the method's ``Method.stage_recipe(stage)``, the
original's settings, over the shared ones for the keys it does not set).
"""
from __future__ import annotations

from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIMIZERS

from benchmark.errors import UserError

RECIPE_KEYS = ("optimizer", "param_scheduler", "batch_size", "epochs", "clip_grad")
SOURCES = ("shared", "own")


def shared_recipe(cfg: dict) -> dict:
    """The recipe params.yaml ``train`` gives every method."""
    return {"optimizer": dict(cfg["optimizer"]), "param_scheduler": list(cfg.get("param_scheduler") or []),
            "batch_size": int(cfg["batch_size"]), "epochs": int(cfg["epochs"]), "clip_grad": cfg.get("clip_grad")}


def stage_recipe(method, stage: str, cfg: dict) -> dict:
    """The recipe of ``method``'s training ``stage`` under params.yaml ``train`` (``cfg``)."""
    source = cfg.get("recipe", "shared")
    if source not in SOURCES:
        raise UserError(f"train.recipe={source!r} is unknown; choose one of: {', '.join(SOURCES)}")
    recipe = shared_recipe(cfg)
    if source == "own":
        own = method.stage_recipe(stage)
        unknown = sorted(set(own) - set(RECIPE_KEYS))
        if unknown:
            raise UserError(f"{type(method).__name__}.stage_recipe({stage!r}) has unknown keys {unknown}; "
                            f"a recipe has {', '.join(RECIPE_KEYS)}")
        recipe.update(own)
    return recipe


def optim_wrapper(method, recipe: dict) -> OptimWrapper:
    """An ``OptimWrapper`` over the parameters ``method`` leaves trainable in this stage."""
    return _wrapper([p for p in method.parameters() if p.requires_grad], recipe)


def _wrapper(params: list, recipe: dict) -> OptimWrapper:
    optimizer = OPTIMIZERS.build({**recipe["optimizer"], "params": params})
    return OptimWrapper(optimizer=optimizer, clip_grad=recipe.get("clip_grad") or None)


def check_recipe(recipe: dict, where: str) -> None:
    """Build ``recipe``'s optimiser wrapper and parameter schedulers once over a dummy parameter,
    so that an option the optimiser or a scheduler refuses is one UserError (naming ``where``,
    e.g. ``train`` or the method's own recipe) before any training starts."""
    import torch
    from mmengine.registry import PARAM_SCHEDULERS
    try:
        wrapper = _wrapper([torch.nn.Parameter(torch.zeros(1))], recipe)
        for cfg in recipe["param_scheduler"]:  # by_epoch units need no data to be checked
            PARAM_SCHEDULERS.build({**{k: v for k, v in cfg.items() if k != "convert_to_iter_based"},
                                    "optimizer": wrapper})
    except Exception as e:  # noqa: BLE001 - whatever torch or mmengine refuses is the user's setting
        raise UserError(f"{where}: the optimiser or a parameter scheduler refused its settings "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None
