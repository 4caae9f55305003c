"""Training on mmengine's Runner (``train``), the pieces it is assembled from, and loading a
trained model (``load_trained``). Submodules: ``runner`` (stages and Runners), ``model`` (a
Method as an mmengine model), ``optim`` (recipes, optimiser wrappers), ``loaders``,
``hooks``, ``guards`` (stopping a diverging training), ``checkpoint``, ``distributed``.

The names below are imported on first use (PEP 562), not with the package: a method that needs
only ``engine.distributed`` (its losses' global counts) and every verb that trains nothing start
without mmengine's Runner and sklearn (``benchmarks/stage_start.py`` measures it)."""
from __future__ import annotations

import importlib

_LAZY = {
    "checkpoint": ("PlainCheckpointHook", "load_state", "load_trained", "method_state"),
    "guards": ("Diverged", "DivergenceGuard"),
    "hooks": ("EpochSeedHook", "HistoryHook", "ProgressHook"),
    "model": ("LevelsPreprocessor", "MethodModel"),
    "runner": ("completed", "history", "partial_dir", "run_stages", "stage_dirs", "train"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
