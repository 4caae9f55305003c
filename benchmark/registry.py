"""Registries (mmengine) for everything a user can name on the command line.

A new method, dataset, indicator backend, perturbation or face detector is one
decorated class or function; ``choices`` and ``get`` see it as soon as its
module is imported (``load_all`` imports the packages that hold them).
"""
from __future__ import annotations

import importlib
import pkgutil

from mmengine.registry import Registry

from benchmark.errors import UserError

METHODS = Registry("method")
DATASETS = Registry("dataset")
INDICATORS = Registry("indicator backend")
PERTURBATIONS = Registry("perturbation")
FACE_DETECTORS = Registry("face detector")
DISTORTIONS = Registry("distortion")  # whole-frame distortions (benchmark/data/distortions.py)

_PACKAGES = ("methods", "benchmark.data", "benchmark.indicators", "benchmark.evaluation.conditions")


def load_all() -> None:
    """Import every module that registers something (idempotent)."""
    for name in _PACKAGES:
        pkg = importlib.import_module(name)
        for info in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
            if not info.name.startswith("_"):
                importlib.import_module(f"{name}.{info.name}")


def choices(registry: Registry) -> list[str]:
    load_all()
    return sorted(registry.module_dict)


def get(registry: Registry, name: str):
    """The registered object called ``name``, or a one-line error listing the valid names."""
    load_all()
    obj = registry.get(name) if isinstance(name, str) else None
    if obj is None:
        raise UserError(f"unknown {registry.name} {name!r}; choose one of: {', '.join(choices(registry))}")
    return obj
