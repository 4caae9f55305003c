"""The shape of ``benchmark/``: no import cycles (function-level imports included), the
libraries (data, indicators, engine, evaluation, report) never import the pipeline or the CLI,
and the start every stage pays imports no heavy library that only some verbs use."""
import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("benchmark.data", "benchmark.indicators", "benchmark.engine", "benchmark.evaluation",
             "benchmark.report", "benchmark.method", "benchmark.backbones", "methods")


def _modules() -> dict[str, Path]:
    out = {}
    for top in ("benchmark", "methods"):
        for f in (ROOT / top).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = f
    return out


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its body."""
    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:  # `from pkg import mod` imports pkg.mod, else pkg
                    deps.add(resolve(f"{node.module}.{alias.name}"))
            elif isinstance(node, ast.Import):
                deps.update(resolve(a.name) for a in node.names)
        graph[name] = {d for d in deps if d and d != name and not name.startswith(d + ".")}
    return graph


def test_no_import_cycles():
    graph = _imports(_modules())
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for dep in graph.get(node, ()):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join(path + [dep])
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_libraries_never_import_the_pipeline_or_the_cli():
    graph = _imports(_modules())
    for name, deps in graph.items():
        if name.startswith(LIBRARIES):
            bad = sorted(d for d in deps if d.startswith(("benchmark.pipeline", "benchmark.cli")))
            assert not bad, f"{name} imports {bad}"


# imported only where they are used: a model built (timm), a training (mmengine's Runner, sklearn),
# a metric (sklearn, scipy.stats), the CLIP indicator (open_clip), a figure (matplotlib)
HEAVY = ("timm", "sklearn", "mmengine.runner", "scipy.stats", "open_clip", "matplotlib.pyplot")


def test_the_start_every_verb_pays_imports_no_heavy_library():
    """The CLI and every registered module (the preflight's ``registry.load_all``), in a fresh
    interpreter: what each DVC stage imports before its work (benchmarks/stage_start.py times it)."""
    code = ("import json, sys, benchmark.cli; from benchmark import registry; registry.load_all(); "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_engine_resolves_each_name_from_its_submodule_on_first_use():
    from benchmark import engine
    for name in engine.__all__:
        module = importlib.import_module(engine._WHERE[name])
        assert getattr(engine, name) is getattr(module, name) and name in dir(engine)
    assert callable(engine.train)  # the function, not a submodule of the same name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        engine.nope  # noqa: B018


def test_no_cached_stage_output_is_tracked_by_git():
    """DVC refuses to record a stage whose cached output git tracks (OutputAlreadyTrackedError): a
    fresh clone's `dvc repro` then fails at that stage (it did, at the report, for results/metrics.json)."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode:
        pytest.skip("not a git checkout")
    files = set(tracked.stdout.split())
    import yaml
    cached = []
    for stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values():
        for out in stage.get("outs", []):  # (a foreach stage's templated outs are under `do:`)
            path, opts = next(iter(out.items())) if isinstance(out, dict) else (out, {})
            if (opts or {}).get("cache", True):
                cached.append(path.rstrip("/"))
    assert "results/metrics.json" in cached
    clash = sorted(f for f in files for p in cached if f == p or f.startswith(p + "/"))
    assert not clash, clash
