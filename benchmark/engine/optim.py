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
original's settings, over the shared ones for the keys it does not set). Whatever the source,
keys a method's own options fix for a stage (``Method.recipe_overrides(stage)``, e.g. DPL's
``stage2_optimizer``) are applied last.
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
    parts = [("stage_recipe", method.stage_recipe(stage))] if source == "own" else []
    for hook, part in parts + [("recipe_overrides", method.recipe_overrides(stage))]:
        unknown = sorted(set(part) - set(RECIPE_KEYS))
        if unknown:
            raise UserError(f"{type(method).__name__}.{hook}({stage!r}) has unknown keys {unknown}; "
                            f"a recipe has {', '.join(RECIPE_KEYS)}")
        recipe.update(part)
    return recipe


def optim_wrapper(method, recipe: dict) -> OptimWrapper:
    """An ``OptimWrapper`` over the parameters ``method`` leaves trainable in this stage."""
    params = [p for p in method.parameters() if p.requires_grad]
    optimizer = OPTIMIZERS.build({**recipe["optimizer"], "params": params})
    return OptimWrapper(optimizer=optimizer, clip_grad=recipe.get("clip_grad") or None)
