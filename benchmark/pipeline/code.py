"""Which source files a stage runs, computed from imports (so a stage's code dependencies are
never a hand-kept list).

``closure(modules)`` follows every ``import`` / ``from … import`` statement (function-level
ones included) from the given project modules through ``benchmark/`` and ``methods/``,
never into ``benchmark.pipeline`` or ``benchmark.cli`` (orchestration, not computation), and
returns the files, parent packages' ``__init__.py`` included. ``method_module(name)`` finds the
file that registers a method (``@METHODS.register_module(name=...)``) by reading the sources,
without importing torch (``registered`` does the same for any registry). Editing a
``methods/_*.py`` helper therefore changes only the stages of the methods that import it.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

from benchmark.errors import UserError

ROOT = Path(__file__).resolve().parents[2]  # where benchmark/ and methods/ live
TOPS = ("benchmark", "methods")
EXCLUDED = ("benchmark.pipeline", "benchmark.cli")


@functools.lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    """Every project module by dotted name (a package by its own name)."""
    out = {}
    for top in TOPS:
        for f in sorted((ROOT / top).rglob("*.py")):
            if "__pycache__" not in f.parts:
                out[".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")] = f
    return out


def _resolve(name: str) -> str | None:
    mods = modules()
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


@functools.lru_cache(maxsize=None)
def _nodes(module: str) -> tuple:
    return tuple(ast.walk(ast.parse(modules()[module].read_text())))


@functools.lru_cache(maxsize=None)
def imports(module: str) -> frozenset[str]:
    """The project modules ``module`` imports anywhere in its body."""
    deps = set()
    for node in _nodes(module):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            deps.update(_resolve(f"{node.module}.{a.name}") for a in node.names)  # `from pkg import mod`
        elif isinstance(node, ast.Import):
            deps.update(_resolve(a.name) for a in node.names)
    return frozenset(d for d in deps if d and d != module and not d.startswith(EXCLUDED))


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def compact(paths) -> list[str]:
    """``paths`` with every package all of whose modules are listed replaced by its folder."""
    have, out = set(paths), []
    dirs = sorted({p.rsplit("/", 1)[0] for p in have if p.endswith("/__init__.py")}, key=len)
    full = [d for d in dirs if all(f.relative_to(ROOT).as_posix() in have
                                   for f in (ROOT / d).rglob("*.py") if "__pycache__" not in f.parts)]
    for p in sorted(have):
        top = next((d for d in full if p.startswith(d + "/")), None)
        if top is None:
            out.append(p)
        elif top not in out:
            out.append(top)
    return out


@functools.lru_cache(maxsize=None)
def closure(mods: tuple[str, ...]) -> tuple[str, ...]:
    """Sorted project-relative paths of ``mods`` and everything they import, transitively."""
    seen, todo = set(), [m for m in mods]
    while todo:
        m = todo.pop()
        for name in _with_parents(m):
            if name in seen or name not in modules() or name.startswith(EXCLUDED):
                continue
            seen.add(name)
            todo.extend(imports(name))
    return tuple(sorted(modules()[m].relative_to(ROOT).as_posix() for m in seen))


@functools.lru_cache(maxsize=None)
def _all_registrations() -> dict[str, dict[str, tuple[str, ast.ClassDef]]]:
    out: dict = {}
    for name in modules():
        if "register_module" not in modules()[name].read_text():
            continue
        for node in _nodes(name):
            if isinstance(node, ast.ClassDef):
                for dec in node.decorator_list:
                    if isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "register_module":
                        names = [k.value.value for k in dec.keywords if k.arg == "name"]
                        reg = getattr(dec.func.value, "id", "")
                        out.setdefault(reg, {})[names[0] if names else node.name] = (name, node)
    return out


def _registrations(registry: str) -> dict[str, tuple[str, ast.ClassDef]]:
    return _all_registrations().get(registry, {})


def registered(registry: str = "METHODS") -> dict[str, str]:
    """{name: module} of what ``<registry>.register_module(name=...)`` decorators register."""
    return {n: m for n, (m, _) in _registrations(registry).items()}


def class_attr(registry: str, name: str, attr: str, default, roots=("Method", "nn.Module", "Dataset")):
    """A registered class's attribute: a literal assigned in its body (``outputs = frozenset({...})``,
    ``synthetic = True``) read without importing it; ``default`` when the class derives only from
    ``roots``; otherwise its module is imported and the (inherited) attribute read."""
    import importlib

    from benchmark import registry as reg
    module, node = _registrations(registry)[name]
    for stmt in node.body:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
        if attr in [getattr(t, "id", "") for t in targets]:
            value = stmt.value
            if isinstance(value, ast.Call) and getattr(value.func, "id", "") in ("frozenset", "set", "tuple"):
                return type(default)(ast.literal_eval(value.args[0])) if value.args else type(default)()
            return ast.literal_eval(value)
    if all(ast.unparse(b) in roots for b in node.bases):
        return default
    importlib.import_module(module)
    return getattr(getattr(reg, registry).get(name), attr, default)


def method_module(name: str) -> str:
    """The module that registers method ``name`` (a one-line error lists the registered ones)."""
    found = registered("METHODS").get(name)
    if found is None:
        raise UserError(f"unknown method {name!r}; choose one of: {', '.join(sorted(registered('METHODS')))}")
    return found
