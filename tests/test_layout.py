"""The shape of ``benchmark/``: no import cycles (function-level imports included), and the
libraries (data, indicators, engine, evaluation, report) never import the pipeline or the CLI."""
import ast
from pathlib import Path

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
