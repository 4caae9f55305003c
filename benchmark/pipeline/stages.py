"""The stages of DESIGN §3 as library functions, and ``run``, which chains them.

Each DVC stage calls one CLI verb, which calls one function here. Each stage
function stamps its outputs with a key of everything it read (``pipeline.stamps``),
so ``run`` skips a stage whose outputs are current, whoever made them. Where
outputs live and what each stage reads is ``pipeline.graph``.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import pandas as pd

from benchmark import config, io, registry
from benchmark.errors import UserError
from benchmark.pipeline import stamps
from benchmark.pipeline import inputs
from benchmark.pipeline.graph import (dataset_cfg, dataset_class, distorted_name, faces_dir, in_order,
                                      indicators_json, model_dir, outputs, parse_train_set, protocol_methods,
                                      protocol_train_sets, resolve_method, scores_path, stage_key, test_sets,
                                      train_set_id)


def train_rows(spec: dict, rows: pd.DataFrame, name: str = "") -> pd.DataFrame:
    """The manifest rows a train set keeps: all, or the reals and the fakes of its manipulations."""
    if not spec.get("manipulations"):
        return rows
    rows = rows[(rows["label"] == 0) | rows["manipulation"].isin(spec["manipulations"])]
    if rows["label"].nunique() < 2:
        raise UserError(f"train set {name or train_set_id(spec)}: no {'/'.join(spec['manipulations'])} fakes "
                        f"next to reals in {faces_dir(spec['dataset'])}/manifest.parquet; check the manipulation codes")
    return rows




def _stamped(fn):
    """Stamp the stage's outputs with its key once it has finished (rank 0 of a data-parallel
    training writes it; the other processes write nothing)."""
    @functools.wraps(fn)
    def stage(params: dict, **a):
        import torch.distributed as dist
        out = fn(params, **a)
        if not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0):
            stamps.write(fn.__name__, a, stage_key(fn.__name__, params, **a))
        return out
    return stage


# ---------------------------------------------------------------- stages
@_stamped
def synthesize(params: dict, *, dataset: str = "ff") -> Path:
    """Generate a synthetic dataset: params ``synthff`` updated by ``datasets.<dataset>.synthff``
    (the stand-ins' seed, sizes, appearance) and its ``manipulations``."""
    cfg = dataset_cfg(params, dataset, check_root=False)
    if not hasattr(dataset_class(params, dataset), "synthesize"):
        raise UserError(f"datasets.{dataset} ({cfg['name']}) is not generated; point its root at the downloaded data")
    gen = {**params["synthff"], **(cfg.get("synthff") or {})}
    if cfg.get("manipulations"):
        gen["manipulations"] = cfg["manipulations"]
    root = Path(cfg["root"])
    dataset_class(params, dataset)(root=root).synthesize(gen)
    return root


@_stamped
def extract(params: dict, *, dataset: str) -> Path:
    from benchmark.data import extract as ex
    out = faces_dir(dataset)
    ex.extract_from_params(dataset_cfg(params, dataset), params["extract"], out)
    return out / "manifest.parquet"


@_stamped
def indicators(params: dict, *, dataset: str) -> Path:
    from benchmark import indicators as ind
    cfg = dataset_cfg(params, dataset)
    meta = Path(cfg["root"]) / "metadata.parquet"
    edges = cfg.get("indicator_edges")   # a test-only dataset is binned with its training set's edges
    ind.compute_indicators(faces_dir(dataset), Path("data/indicators"), dataset,
                           {**params["indicators"], "device": _device(params)},
                           metadata=meta if meta.is_file() else None,
                           edges_from=indicators_json(edges) if edges else None)
    return indicators_json(dataset)


@_stamped
def distort(params: dict, *, dataset: str, distortion: str, severity: int) -> Path:
    from benchmark.data.distorted_crops import distort_faces
    cfg = params["distort"]
    out = faces_dir(distorted_name(dataset, distortion, severity))
    distort_faces(dataset_class(params, dataset)(root=Path(dataset_cfg(params, dataset)["root"])), faces_dir(dataset),
                  out, distortion, severity, seed=cfg["seed"], qualities=cfg["qualities"], splits=cfg["splits"],
                  options=cfg.get("options"))
    return out / "manifest.parquet"


@_stamped
def train(params: dict, *, method: str, train_set: str, seed: int) -> Path:
    import torch

    from benchmark import engine
    from benchmark.data.jpeg import RandomJPEG
    from benchmark.data.frames import TrainFrames
    spec = parse_train_set(train_set, params)
    rows = train_rows(spec, inputs.manifest(spec["dataset"], spec["quality"], spec["split"]), train_set)
    augment = RandomJPEG() if params["train"]["jpeg_aug"] else None
    torch.manual_seed(seed)
    model = build_method(params, method)
    data = TrainFrames(rows, faces_dir(spec["dataset"]), seed=seed, augment=augment,
                       pair_manifest=inputs.pair_manifest(spec) if "quality_pair" in model.requires else None,
                       manipulation="manipulation_label" in model.requires)
    device = engine.distributed.init(params.get("launcher", "none"), params.get("device", "auto"))
    indicator = inputs.indicator(params, spec["dataset"], device)
    out = model_dir(train_set, method, seed)
    summary = engine.train(model, data, out, params["train"], seed, levels=indicator.levels,
                           fingerprint=stage_key("train", params, method=method, train_set=train_set, seed=seed),
                           device=params.get("device", "auto"), launcher=params.get("launcher", "none"))
    if "diverged" in summary:
        d = summary["diverged"]
        print(f"warning: training of {method} (seed {seed}, {train_set}) diverged at stage {d['stage']}, epoch "
              f"{d['epoch']}, iteration {d['iteration']} ({d['what']}); stopped there, {out / 'model.pt'} holds "
              f"{d['kept']}, and the report marks its rows", file=sys.stderr)
    return out / "model.pt"


@_stamped
def evaluate(params: dict, *, protocol: str, method: str, seed: int) -> list[Path]:
    from benchmark import engine
    from benchmark.evaluation import score as ev
    from benchmark.evaluation.indicator_cache import IndicatorCache
    proto = config.load_protocol(protocol)
    where = params["evaluate"].get("indicator_cache")
    cache = IndicatorCache(where) if where else None
    conditions = registry.get(registry.PERTURBATIONS, proto["conditions"])()
    device = _device(params)
    indicators = {d: inputs.indicator(params, d, device) for d in {t["dataset"] for t in proto["test_sets"]}}  # CLIP: build once
    if proto.get("distortions") and conditions.n_conditions != 1:
        raise UserError(f"protocols/{protocol}.yaml: with `distortions`, `conditions` must be one condition (e.g. none)")
    tests = [(t, frames_subset(inputs.manifest(t["faces"], t["quality"], t["split"]), proto.get("frames_per_video")))
             for t in test_sets(proto)]
    paths = []
    for train_set in protocol_train_sets(proto):
        model = _trained(params, method, train_set, seed)
        parts = []
        for test, rows in tests:
            df = ev.score(model, rows, faces_dir(test["faces"]), conditions, indicators[test["dataset"]],
                          params["evaluate"]["batch_size"], params["evaluate"]["seed"],
                          device=device, cfg=params["evaluate"], cache=cache)
            if "perturbation" in test:
                df = df.assign(perturbation=test["perturbation"], severity=test["severity"])
            parts.append(df.assign(test_set=test["name"]))
        out = pd.concat(parts, ignore_index=True).assign(protocol=protocol, method=method, seed=seed, train_set=train_set)
        out.attrs["compute"] = ev.compute(device, params["evaluate"])
        paths.append(scores_path(protocol, method, train_set, seed))
        io.write_parquet(paths[-1], out)
    return paths


def cost(params: dict) -> Path:
    """results/cost.csv: parameters, GFLOPs, CPU images/s, peak training memory (benchmark/evaluation/cost.py)."""
    from benchmark.evaluation import cost as cost_
    return cost_.write_cost_table(params)


def report(params: dict, protocols: list[str] = (), methods: list[str] = ()) -> list[Path]:
    """Metrics and tables of the grid's protocols and methods (plus any named here),
    so scores left on disk by a method since removed from the grid never show up."""
    from benchmark.evaluation import comparable, compare, metrics
    from benchmark.pipeline import provenance
    from benchmark.report import render_report
    protocols = {*params["grid"]["protocols"], *protocols}
    methods = {*params["grid"]["methods"], *methods}
    files = sorted(f for f in Path("results/scores").glob("*/*/*.parquet")
                   if f.parent.parent.name in protocols and f.parent.name in methods)
    if not files:
        raise UserError("no scores under results/scores for the grid; run `python -m benchmark run protocol=...` or dvc repro first")
    scores = pd.concat([io.read_table(f, inputs.scores_stage(f), inputs.SCORE_COLUMNS) for f in files], ignore_index=True)
    mcfg = params["metrics"]
    table = metrics.compute_metrics(scores, n_boot=mcfg["bootstrap"], boot_seed=mcfg["seed"])
    io.write_csv("results/metrics.csv", table)
    io.write_csv("results/significance.csv", compare.significance(scores, mcfg["reference_method"],
                                                                    mcfg["bootstrap"], mcfg["seed"]))
    io.write_csv("results/metrics_seeds.csv", compare.seed_summary(table))
    io.write_json("results/metrics.json", metrics.metrics_json(table))
    io.write_json(comparable.RECORD, comparable.record(params))  # which params made these metrics
    protos = {p: config.load_protocol(p) for p in sorted(table["protocol"].unique())}
    prov = provenance.collect(params, sorted(table["method"].unique(), key=_method_order(params)),
                              sorted(int(s) for s in table["seed"].unique()), sorted(table["train_set"].unique()),
                              scores)
    paths = render_report(table, prov, protos, Path("results"), **params["report"]["inputs"])
    return [Path("results/metrics.csv"), Path("results/metrics.json"), Path("results/significance.csv"),
            Path("results/metrics_seeds.csv"), comparable.RECORD, *paths]


def plots(params: dict) -> list[Path]:
    """t-SNE and Grad-CAM figures of the grid's trained models (params ``plots``) in results/plots."""
    from benchmark import engine
    from benchmark.report import model_plots
    cfg, seed = params["plots"], params["grid"]["seeds"][0]
    spec = parse_train_set(cfg["train_set"], params)
    models = {m: _trained(params, m, cfg["train_set"], seed) for m in params["grid"]["methods"]}
    device = _device(params)
    figs = model_plots.make(models, inputs.manifest(spec["dataset"], cfg["quality"], "test"), faces_dir(spec["dataset"]),
                            inputs.indicator(params, spec["dataset"], device), cfg, Path("results/plots"), device)
    return [p for f in figs for p in (f.png, f.png.with_suffix(".svg"), f.png.with_suffix(".txt"))]


def run(params: dict, protocol: str, methods: list[str] | None = None) -> list[Path]:
    """Everything ``protocol`` needs, skipping each stage whose outputs are current."""
    methods = methods or protocol_methods(config.load_protocol(protocol))
    todo = [("evaluate", {"protocol": protocol, "method": m, "seed": s})
            for m in methods or params["grid"]["methods"] for s in params["grid"]["seeds"]]
    done: set[str] = set()
    for stage, args in in_order(todo, params):
        if stamps.name(stage, args) in done:
            continue
        done.add(stamps.name(stage, args))
        if stamps.is_current(stage, args, stage_key(stage, params, **args), outputs(stage, params, **args)):
            print(f"[skip] {stamps.name(stage, args)}: up to date")
        else:
            print(f"[run]  {stamps.name(stage, args)}")
            STAGE_FUNCTIONS[stage](params, **args)
    return report(params, [protocol], methods or [])


def analyze(params: dict, *, method: str, seed: int = 0, protocol: str = "cross_quality") -> list[Path]:
    """Per-step AUC, FSM positions and indicator-level histograms of ``method`` trained on the
    protocol's train set (``benchmark.report.analysis``)."""

    import matplotlib
    matplotlib.use("Agg")
    from benchmark import engine
    from benchmark.report import analysis
    proto = config.load_protocol(protocol)
    train_set = protocol_train_sets(proto)[0]
    model = _trained(params, method, train_set, seed)
    device = _device(params)
    indicators = {d: inputs.indicator(params, d, device) for d in sorted({t["dataset"] for t in proto["test_sets"]})}
    tests = [(t["name"], inputs.manifest(t["dataset"], t["quality"], t["split"]), faces_dir(t["dataset"]),
              indicators[t["dataset"]]) for t in proto["test_sets"]]
    tables = {}
    for ds in indicators:
        table = Path("data/indicators") / f"{ds}.parquet"
        if table.is_file():
            hint = f"`python -m benchmark indicators dataset={ds}`"
            tables[ds] = (io.read_table(table, hint), io.read_json(indicators_json(ds), hint).get("spearman") or {})
    return analysis.write_analysis(method, model, tests, tables, params["evaluate"]["batch_size"], device)


def run_grid(params: dict) -> None:
    """Every protocol of ``grid.protocols`` for every grid method and seed (up-to-date stages
    are skipped), then one report of them all. Single-threaded, so a reference and a later
    check compute the same floats whatever the machine's core count (and a shared machine's
    OpenMP spin-waits do not slow it down many times over)."""
    import torch
    torch.set_num_threads(1)
    for protocol in params["grid"]["protocols"]:
        run(params, protocol)


# ---------------------------------------------------------------- helpers
STAGE_FUNCTIONS = {"synthesize": synthesize, "extract": extract, "indicators": indicators,
                   "distort": distort, "train": train, "evaluate": evaluate}


def build_method(params: dict, name: str):
    root, opts = resolve_method(params, name)
    return registry.get(registry.METHODS, root)(**opts)


def _trained(params: dict, method: str, train_set: str, seed: int):
    """The trained ``method`` (one line naming model.pt and the train command when it is missing,
    truncated, not weights-only or made with another configuration)."""
    from benchmark import engine
    return engine.load_trained(build_method(params, method), model_dir(train_set, method, seed),
                               f"`python -m benchmark train method={method} train_set={train_set} seed={seed}`")


def frames_subset(rows: pd.DataFrame, k: int | None) -> pd.DataFrame:
    """At most ``k`` of each video's extracted frames, spread evenly (a protocol's
    ``frames_per_video``; None keeps all)."""
    if not k:
        return rows
    from benchmark.data.extract import sample_indices
    rows = rows.sort_values(["quality", "video_id", "frame_idx"], kind="mergesort")
    pos = rows.groupby(["quality", "video_id"], sort=False).cumcount().to_numpy()
    size = rows.groupby(["quality", "video_id"], sort=False)["frame_idx"].transform("size").to_numpy()
    keep = [p in sample_indices(n, int(k)) for p, n in zip(pos, size)]
    return rows[keep]


def _device(params: dict):
    """params.yaml ``device`` as a torch device (benchmark.engine.device)."""
    from benchmark.engine.device import resolve
    return resolve(params.get("device", "auto"))


def _method_order(params: dict):
    order = {m: i for i, m in enumerate(params["grid"]["methods"])}
    return lambda m: (order.get(m, len(order)), m)

