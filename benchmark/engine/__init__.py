"""Training on mmengine's Runner (``train``), the pieces it is assembled from, and loading a
trained model (``load_trained``). Submodules: ``runner`` (stages and Runners), ``model`` (a
Method as an mmengine model), ``optim`` (recipes, optimiser wrappers), ``loaders``,
``hooks``, ``guards`` (stopping a diverging training), ``checkpoint``, ``distributed``.

The names that the ``TYPE_CHECKING`` block imports are resolved on first use (PEP 562), not with
the package: a method that needs only ``engine.distributed`` (its losses' global counts) and
every verb that trains nothing start without mmengine's Runner and sklearn
(``benchmarks/stage_start.py`` measures it)."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what the names resolve to; also what the stages' code dependencies follow (pipeline.code)
    from benchmark.engine.checkpoint import PlainCheckpointHook, load_state, load_trained, method_state  # noqa: F401
    from benchmark.engine.guards import Diverged, DivergenceGuard  # noqa: F401
    from benchmark.engine.hooks import EpochSeedHook, HistoryHook, ProgressHook  # noqa: F401
    from benchmark.engine.model import LevelsPreprocessor, MethodModel  # noqa: F401
    from benchmark.engine.runner import completed, history, partial_dir, run_stages, stage_dirs, train  # noqa: F401


def _declared() -> dict[str, str]:
    """{name: submodule} as the ``TYPE_CHECKING`` imports above declare them (the one list)."""
    tree = ast.parse(Path(__file__).read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    return {a.name: node.module for node in block.body for a in node.names}


_WHERE = _declared()
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
