"""The one declaration of the pipeline's stages.

``stages(params)`` lists every stage of the grid that params.yaml declares (``grid.protocols``
× their methods × train sets, the datasets and distortions they read, the analyses, the
figures, the cost table and the report): its verb and arguments (= its command,
``python -m benchmark <verb> k=v …``), the params keys it reads, the files it reads and writes.
``dvc.yaml`` is rendered from this list (``pipeline.dvcfile``; a test keeps the committed
file equal to it), so ``dvc repro``, ``python -m benchmark run`` (which asks DVC what is stale,
``pipeline.executor``) and ``jobs`` (waves for a cluster) see the same DAG.

Code dependencies are computed from imports (``pipeline.code``): a stage depends on the
modules its verb computes with and, for a method's stages, on the method's own file and the
helpers it imports. Paths may hold DVC templates: ``${item.seed}`` (seeded stages are a DVC
``matrix`` over ``grid.seeds``), ``${grid.seeds[0]}``, ``${datasets.<id>.root}``;
``pipeline.dag`` fills them in per seed and derives the DAG. A variant (``base:``) whose base is trained for
the same train set and whose training would give the base's model or one of its stages
(``specs.reused_stage``: identical options, or ``Method.reused_stage``) gets ``reuse=<base>``
and the base's model as a dependency; any other variant trains on its own, in parallel with
its base.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from benchmark import config
from benchmark.pipeline import code, specs

SEED = "${item.seed}"
FIRST_SEED = "${grid.seeds[0]}"
# what each verb computes with (its import closure is the stage's code dependency)
VERB_MODULES = {
    "synthesize": ("benchmark.data.synthff",),
    "extract": ("benchmark.data.extract",),
    "indicators": ("benchmark.indicators",),
    "distort": ("benchmark.data.distorted_crops",),
    "train": ("benchmark.engine", "benchmark.data.frames", "benchmark.data.jpeg", "benchmark.data.selection",
              "benchmark.indicators"),
    "evaluate": ("benchmark.engine.checkpoint", "benchmark.evaluation.score", "benchmark.evaluation.conditions",
                 "benchmark.evaluation.indicator_cache", "benchmark.engine.device", "benchmark.data.selection",
                 "benchmark.indicators", "benchmark.io"),
    "analyze": ("benchmark.report.analysis", "benchmark.engine.checkpoint", "benchmark.data.selection",
                "benchmark.indicators"),
    "plots": ("benchmark.report.model_plots", "benchmark.engine.checkpoint", "benchmark.data.selection",
              "benchmark.indicators"),
    "cost": ("benchmark.evaluation.cost",),
    "metrics": ("benchmark.evaluation.metrics", "benchmark.evaluation.compare", "benchmark.report.series"),
    "report": ("benchmark.evaluation.compare", "benchmark.evaluation.comparable", "benchmark.report"),
}
VERB_FILES = {"report": ("benchmark/report/templates",)}  # non-Python code a verb reads
PLOT_FILES = [f"results/plots/{n}.{e}" for n in ("tsne", "gradcam") for e in ("png", "svg", "txt")]


@dataclass(frozen=True)
class Out:
    path: str
    cache: bool = True
    persist: bool = False
    metric: bool = False


@dataclass
class Stage:
    verb: str
    args: dict                       # verb arguments; a seeded stage's "seed" is SEED
    deps: list[str]
    params: list[str]
    outs: list[Out]
    key: str = ""                    # the name's suffix (defaults to the argument values)
    seeded: bool = False
    meta: dict = field(default_factory=dict)  # what the graph knows beyond DVC (protocol, method)

    @property
    def name(self) -> str:
        return "-".join([self.verb, *([self.key] if self.key else [])])

    @property
    def cmd(self) -> str:
        return " ".join(["python -m benchmark", self.verb, *(f"{k}={v}" for k, v in self.args.items())])


def code_deps(verb: str, methods=()) -> list[str]:
    mods = VERB_MODULES[verb] + tuple(sorted({code.method_module(m) for m in methods}))
    return code.compact(code.closure(mods)) + list(VERB_FILES.get(verb, ()))


#: params keys of every stage whose numbers torch computes (how the CPU rounds: engine.device)
COMPUTED = ["numerics"]


def method_params(params: dict, method: str) -> list[str]:
    return [f"methods.{m}" for m in specs.base_chain(params, method)]


# ---------------------------------------------------------------- the stages
def data_stages(params: dict, datasets: set[str]) -> list[Stage]:
    out = []
    for ds in sorted(datasets, key=lambda d: (d != "ff", d)):
        cfg = specs.dataset_cfg(params, ds, check_root=False)
        root = f"${{datasets.{ds}.root}}"
        module = code.registered("DATASETS").get(cfg["name"])
        extra = tuple([module] if module else [])
        if specs.is_synthetic(params, ds):
            out.append(Stage("synthesize", {"dataset": ds}, code.compact(code.closure(VERB_MODULES["synthesize"] + extra)),
                             ["synthff", f"datasets.{ds}"], [Out(root)], key=ds))
        faces = str(specs.faces_dir(ds))
        out.append(Stage("extract", {"dataset": ds}, [root, *code.compact(code.closure(VERB_MODULES["extract"] + extra))],
                         ["extract", f"datasets.{ds}"], [Out(faces)], key=ds))
        edges = cfg.get("indicator_edges")
        out.append(Stage("indicators", {"dataset": ds},
                         [faces, *([str(specs.indicators_json(edges))] if edges else []), *code_deps("indicators")],
                         ["indicators", f"datasets.{ds}", *COMPUTED],
                         [Out(str(specs.indicators_json(ds))), Out(f"data/indicators/{ds}.parquet")], key=ds))
    return out


def distort_stages(params: dict, wanted: set[tuple[str, str, int]]) -> list[Stage]:
    out = []
    for ds, c, s in sorted(wanted):
        module = code.registered("DATASETS").get(specs.dataset_cfg(params, ds, check_root=False)["name"])
        out.append(Stage("distort", {"dataset": ds, "distortion": c, "severity": s},
                         [f"${{datasets.{ds}.root}}", str(specs.faces_dir(ds)),
                          *code.compact(code.closure(VERB_MODULES["distort"] + ((module,) if module else ())))],
                         ["distort"], [Out(str(specs.faces_dir(specs.distorted_name(ds, c, s))))],
                         key=f"{ds}-{c}{s}"))
    return out


def train_stage(params: dict, method: str, train_set: str, reuse: str | None = None) -> Stage:
    ds = specs.parse_train_set(train_set, params)["dataset"]
    args = {"method": method, "train_set": train_set, "seed": SEED, **({"reuse": reuse} if reuse else {})}
    deps = [str(specs.faces_dir(ds)), str(specs.indicators_json(ds))]
    deps += [str(specs.model_dir(train_set, reuse, SEED))] if reuse else []
    return Stage("train", args, deps + code_deps("train", [specs.resolve_method(params, method)[0]]),
                 ["train", *method_params(params, method), *COMPUTED],
                 [Out(str(specs.model_dir(train_set, method, SEED)))],
                 key=f"{method}-{train_set}", seeded=True, meta={"method": method, "train_set": train_set})


def evaluate_stage(params: dict, protocol: str, method: str, proto: dict | None = None) -> Stage:
    proto = proto or config.load_protocol(protocol)
    trains = specs.protocol_train_sets(proto)
    tests = specs.test_sets(proto)
    deps = [str(specs.model_dir(ts, method, SEED)) for ts in trains] + [f"protocols/{protocol}.yaml"]
    deps += sorted({str(specs.faces_dir(t["faces"])) for t in tests})
    deps += sorted({str(specs.indicators_json(t["dataset"])) for t in tests})
    return Stage("evaluate", {"protocol": protocol, "method": method, "seed": SEED},
                 deps + code_deps("evaluate", [specs.resolve_method(params, method)[0]]),
                 ["evaluate", "indicators", *method_params(params, method), *COMPUTED],
                 [Out(str(specs.scores_path(protocol, method, ts, SEED))) for ts in trains],
                 key=f"{protocol}-{method}", seeded=True, meta={"protocol": protocol, "method": method})


def stages(params: dict) -> list[Stage]:
    """Every stage of the grid, upstream stages first."""
    grid = params["grid"]
    protos = {p: config.load_protocol(p) for p in grid["protocols"]}
    rows = {p: specs.protocol_methods(pr) or list(grid["methods"]) for p, pr in protos.items()}
    trained, datasets, distorted = {}, set(), set()
    for p, proto in protos.items():
        for ts in specs.protocol_train_sets(proto):
            datasets.add(specs.parse_train_set(ts, params)["dataset"])
            for m in rows[p]:
                trained.setdefault((m, ts), None)
        for t in specs.test_sets(proto):
            datasets.add(t["dataset"])
            if "perturbation" in t:
                distorted.add((t["dataset"], t["perturbation"], t["severity"]))
    for ds in list(datasets):
        edges = specs.dataset_cfg(params, ds, check_root=False).get("indicator_edges")
        datasets |= {edges} if edges else set()
    out = data_stages(params, datasets) + distort_stages(params, distorted)
    for m, ts in trained:
        base = (params["methods"][m] or {}).get("base")
        reuse = (base, ts) in trained and specs.reused_stage(params, m, base) is not None
        out.append(train_stage(params, m, ts, reuse=base if reuse else None))
    sources = score_sources(protos, rows)
    for p in protos:
        for m in rows[p]:
            if sources[(p, m)] == p:
                out.append(evaluate_stage(params, p, m, protos[p]))
                out[-1].meta["protocols"] = [q for q in protos if sources.get((q, m)) == p]
    out += analyze_stages(params, protos, rows)
    out += [metrics_stage(p, {m: sources[(p, m)] for m in rows[p]}) for p in protos]
    out += [plots_stage(params), cost_stage(params), report_stage(params, out)]
    return out


def evaluation_key(proto: dict) -> str:
    """What a protocol's scores depend on besides the model: its train sets, test sets (not their
    labels), conditions and frames per video. Two protocols with one key score a model alike."""
    import json
    tests = sorted([str(t.get(k)) for k in ("name", "dataset", "quality", "split")] for t in proto["test_sets"])
    return json.dumps([specs.protocol_train_sets(proto), tests, proto.get("distortions"), proto.get("conditions"),
                       proto.get("frames_per_video")], sort_keys=True)


def score_sources(protos: dict, rows: dict) -> dict[tuple[str, str], str]:
    """{(protocol, method): the protocol whose evaluate stage scores it}: the first grid protocol
    with the same ``evaluation_key`` that lists the method (an ablation's DPL row reads the
    cross-quality scores of the same model on the same test sets)."""
    keys, out = {p: evaluation_key(pr) for p, pr in protos.items()}, {}
    for p in protos:
        for m in rows[p]:
            out[(p, m)] = next(q for q in protos if keys[q] == keys[p] and m in rows[q])
    return out


def metrics_stage(protocol: str, sources: dict[str, str]) -> Stage:
    """One protocol's metrics, significance tests, DVC headline AUCs and curves (``reporting``),
    from the scores of each of its methods (``sources``: {method: protocol that scored it})."""
    out = specs.metrics_paths(protocol)
    scores = [str(specs.scores_path(src, m, "x", 0).parent) for m, src in sources.items()]
    return Stage("metrics", {"protocol": protocol},
                 [*scores, f"protocols/{protocol}.yaml", *code_deps("metrics")],
                 ["metrics", "grid.methods", "grid.seeds"],
                 [Out(str(out["csv"])), Out(str(out["significance"])), Out(str(out["curves"])),
                  Out(str(out["json"]), cache=False, metric=True)], key=protocol, meta={"protocol": protocol})


def analyze_stages(params: dict, protos: dict, rows: dict) -> list[Stage]:
    """An ``analyze`` stage per ``grid.methods`` entry whose class says its outputs carry
    ``step_logits``, on the first grid protocol that lists it (the grid's first seed)."""
    out, seen = [], set()
    for p, proto in protos.items():
        for m in rows[p]:
            root = specs.resolve_method(params, m)[0]
            if m in seen or m not in params["grid"]["methods"] or \
                    "step_logits" not in code.class_attr("METHODS", root, "outputs", frozenset()):
                continue
            seen.add(m)
            tests = specs.test_sets({**proto, "distortions": None})
            deps = [str(specs.model_dir(specs.protocol_train_sets(proto)[0], m, FIRST_SEED)), f"protocols/{p}.yaml"]
            deps += sorted({str(specs.faces_dir(t["dataset"])) for t in tests})
            deps += sorted({str(specs.indicators_json(t["dataset"])) for t in tests})
            out.append(Stage("analyze", {"method": m, "protocol": p, "seed": FIRST_SEED},
                             deps + code_deps("analyze", [root]), ["evaluate", *method_params(params, m), *COMPUTED],
                             [Out(str(specs.analysis_dir(m)))], key=m, meta={"method": m, "protocol": p}))
    return out


def plots_stage(params: dict) -> Stage:
    cfg, methods = params["plots"], list(params["grid"]["methods"])
    ds = specs.parse_train_set(cfg["train_set"], params)["dataset"]
    deps = [str(specs.model_dir(cfg["train_set"], m, FIRST_SEED)) for m in methods]
    deps += [str(specs.faces_dir(ds)), str(specs.indicators_json(ds))]
    roots = [specs.resolve_method(params, m)[0] for m in methods]
    return Stage("plots", {}, deps + code_deps("plots", roots),
                 ["plots", "grid.methods", "grid.seeds", *sorted({k for m in methods for k in method_params(params, m)})],
                 [Out(p) for p in PLOT_FILES])


def cost_stage(params: dict) -> Stage:
    methods = list(params["grid"]["methods"])
    roots = [specs.resolve_method(params, m)[0] for m in methods]
    return Stage("cost", {}, code_deps("cost", roots),
                 ["cost", "grid.methods", "extract.size", *sorted({k for m in methods for k in method_params(params, m)})],
                 [Out("results/cost.csv")])


def report_stage(params: dict, upstream: list[Stage]) -> Stage:
    histories = [f"{o.path}/history.csv" for s in upstream if s.verb == "train" for o in s.outs]
    made = [o.path for s in upstream if s.verb == "metrics" for o in s.outs if not o.metric]
    scores = sorted({d for s in upstream if s.verb == "metrics" for d in s.deps if d.startswith("results/scores/")})
    deps = [*made, *scores, *(["results/analysis"] if any(s.verb == "analyze" for s in upstream) else []),
            *PLOT_FILES, "results/cost.csv", "results/paper", "protocols",
            *sorted({h.replace(SEED, FIRST_SEED) for h in histories}), *code_deps("report")]
    outs = [Out(p) for p in ("results/report.html", "results/tables", "results/figures", str(specs.MODEL_CURVES),
                             "results/metrics.csv", "results/metrics.json", "results/significance.csv",
                             "results/metrics_seeds.csv", "results/metrics_params.json")]
    # the params record (evaluation.comparable) hashes every section that decides an AUC
    from benchmark.evaluation.comparable import IGNORED
    decided = sorted(k for k in params if k not in (*IGNORED, "methods", "grid"))
    methods = sorted({k for m in params["grid"]["methods"] for k in method_params(params, m)})
    return Stage("report", {}, deps, ["report", "grid", *decided, *methods], outs)
