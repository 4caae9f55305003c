"""The stages of DESIGN §3 as library functions, and ``run``, which chains them.

Each DVC stage calls one CLI verb, which calls one function here. Each stage
function stamps its outputs with a key of everything it read (benchmark.stamps),
so ``run`` skips a stage whose outputs are current, whoever made them.
"""
from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from benchmark import config, io, registry, stamps
from benchmark.errors import UserError

# ---------------------------------------------------------------- paths
def faces_dir(dataset: str) -> Path:
    return Path("data/faces") / dataset


def indicators_json(dataset: str) -> Path:
    return Path("data/indicators") / f"{dataset}.json"


def model_dir(train_set: str, method: str, seed: int) -> Path:
    return Path("models") / train_set / method / f"seed{seed}"


def scores_path(protocol: str, method: str, train_set: str, seed: int) -> Path:
    return Path("results/scores") / protocol / method / f"{train_set}_seed{seed}.parquet"


def train_set_id(spec: dict) -> str:
    """``<dataset>_<quality>``, plus ``_<M>`` per manipulation when the set keeps only those
    fakes (with all reals): ``ff_c23``, ``ff_c23_DF``."""
    return "_".join([spec["dataset"], spec["quality"], *spec.get("manipulations", ())])


def parse_train_set(name: str, params: dict) -> dict:
    """``ff_c23`` -> {dataset: ff, quality: c23, split: train}; ``ff_c23_DF`` adds
    manipulations [DF] (train on the reals and the DF fakes only)."""
    from benchmark.data.layout import QUALITIES
    parts = str(name).split("_")
    at = next((i for i, p in enumerate(parts) if p in QUALITIES and i > 0), None)
    dataset = "_".join(parts[:at]) if at else ""
    if at is None or dataset not in params["datasets"] or not all(parts[at + 1:]):
        valid = [f"{d}_{q}" for d in params["datasets"] for q in QUALITIES]
        raise UserError(f"unknown train_set {name!r}; choose one of: {', '.join(valid)}, "
                        f"optionally followed by _<manipulation> codes (e.g. ff_c23_DF)")
    spec = {"dataset": dataset, "quality": parts[at], "split": "train"}
    if parts[at + 1:]:
        spec["manipulations"] = parts[at + 1:]
    return spec


def protocol_train_sets(proto: dict) -> list[str]:
    """The train set ids a protocol trains on: ``train_sets`` (ids, or dicts with ``name``)
    or the single ``train_set`` mapping {dataset, quality[, manipulations]}."""
    if "train_sets" in proto:
        entries = proto["train_sets"]
        ids = [e["name"] if isinstance(e, dict) else e for e in entries or []] if isinstance(entries, list) else []
        if not ids or not all(isinstance(i, str) for i in ids):
            raise UserError(f"protocol {proto.get('name')!r}: train_sets must be a list of train set ids "
                            f"(e.g. ff_c23_DF) or of mappings with a name")
        return ids
    if not isinstance(proto.get("train_set"), dict):
        raise UserError(f"protocol {proto.get('name')!r} needs train_set {{dataset, quality}} or train_sets [ids]")
    return [train_set_id(proto["train_set"])]


def train_rows(spec: dict, rows: pd.DataFrame, name: str = "") -> pd.DataFrame:
    """The manifest rows a train set keeps: all, or the reals and the fakes of its manipulations."""
    if not spec.get("manipulations"):
        return rows
    rows = rows[(rows["label"] == 0) | rows["manipulation"].isin(spec["manipulations"])]
    if rows["label"].nunique() < 2:
        raise UserError(f"train set {name or train_set_id(spec)}: no {'/'.join(spec['manipulations'])} fakes "
                        f"next to reals in {faces_dir(spec['dataset'])}/manifest.parquet; check the manipulation codes")
    return rows


# ---------------------------------------------------------------- keys
def upstream(stage: str, params: dict, **a) -> list[tuple[str, dict]]:
    """The stages whose outputs ``stage`` reads."""
    if stage == "extract":
        return [("synthesize", {"dataset": a["dataset"]})] if dataset_class(params, a["dataset"]).synthetic else []
    if stage == "indicators":
        edges = _dataset_cfg(params, a["dataset"], check_root=False).get("indicator_edges")
        return [("extract", {"dataset": a["dataset"]})] + ([("indicators", {"dataset": edges})] if edges else [])
    if stage == "train":
        return [("indicators", {"dataset": parse_train_set(a["train_set"], params)["dataset"]})]
    if stage == "evaluate":
        proto = config.load_protocol(a["protocol"])
        trains = [("train", {"method": a["method"], "train_set": ts, "seed": a["seed"]}) for ts in protocol_train_sets(proto)]
        return [*trains, *(("indicators", {"dataset": d}) for d in sorted({t["dataset"] for t in proto["test_sets"]}))]
    return []


def stage_key(stage: str, params: dict, **a) -> str:
    up = [stage_key(s, params, **b) for s, b in upstream(stage, params, **a)]
    if stage == "evaluate":  # the protocol file is an input too
        up.append((Path("protocols") / f"{a['protocol']}.yaml").read_text())
    return stamps.fingerprint(stage, params, up, **a)


def outputs(stage: str, params: dict, **a) -> list[Path]:
    if stage == "synthesize":
        return [Path(params["datasets"][a["dataset"]]["root"])]
    if stage == "extract":
        return [faces_dir(a["dataset"]) / "manifest.parquet"]
    if stage == "indicators":
        return [indicators_json(a["dataset"])]
    if stage == "train":
        return [model_dir(a["train_set"], a["method"], a["seed"]) / "model.pt"]
    proto = config.load_protocol(a["protocol"])
    return [scores_path(a["protocol"], a["method"], ts, a["seed"]) for ts in protocol_train_sets(proto)]


def _stamped(fn):
    """Stamp the stage's outputs with its key once it has finished."""
    @functools.wraps(fn)
    def stage(params: dict, **a):
        out = fn(params, **a)
        stamps.write(fn.__name__, a, stage_key(fn.__name__, params, **a))
        return out
    return stage


# ---------------------------------------------------------------- stages
@_stamped
def synthesize(params: dict, *, dataset: str = "ff") -> Path:
    """Generate a synthetic dataset: params ``synthff`` updated by ``datasets.<dataset>.synthff``
    (the stand-ins' seed, sizes, appearance) and its ``manipulations``."""
    cfg = _dataset_cfg(params, dataset, check_root=False)
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
    ex.extract_from_params(_dataset_cfg(params, dataset), params["extract"], out)
    return out / "manifest.parquet"


@_stamped
def indicators(params: dict, *, dataset: str) -> Path:
    from benchmark import indicators as ind
    cfg = _dataset_cfg(params, dataset)
    meta = Path(cfg["root"]) / "metadata.parquet"
    edges = cfg.get("indicator_edges")   # a test-only dataset is binned with its training set's edges
    ind.compute_indicators(faces_dir(dataset), Path("data/indicators"), dataset, params["indicators"],
                           metadata=meta if meta.is_file() else None,
                           edges_from=indicators_json(edges) if edges else None)
    return indicators_json(dataset)


@_stamped
def train(params: dict, *, method: str, train_set: str, seed: int) -> Path:
    import torch

    from benchmark import engine, perturb
    from benchmark.data.frames import TrainFrames
    spec = parse_train_set(train_set, params)
    rows = train_rows(spec, _manifest(spec["dataset"], spec["quality"], spec["split"]), train_set)
    augment = perturb.RandomJPEG() if params["train"]["jpeg_aug"] else None
    data = TrainFrames(rows, faces_dir(spec["dataset"]), seed=seed, augment=augment)
    torch.manual_seed(seed)
    model = build_method(params, method)
    indicator = _indicator(params, spec["dataset"])
    out = model_dir(train_set, method, seed)
    engine.train(model, data, out, params["train"], seed, levels=indicator.levels,
                 fingerprint=stage_key("train", params, method=method, train_set=train_set, seed=seed))
    return out / "model.pt"


@_stamped
def evaluate(params: dict, *, protocol: str, method: str, seed: int) -> list[Path]:
    from benchmark import engine, evaluate as ev
    proto = config.load_protocol(protocol)
    conditions = registry.get(registry.PERTURBATIONS, proto["conditions"])()
    indicators = {d: _indicator(params, d) for d in {t["dataset"] for t in proto["test_sets"]}}  # CLIP: build once
    tests = {t["name"]: _manifest(t["dataset"], t["quality"], t["split"]) for t in proto["test_sets"]}
    paths = []
    for train_set in protocol_train_sets(proto):
        model = engine.load_trained(build_method(params, method), model_dir(train_set, method, seed))
        parts = []
        for test in proto["test_sets"]:
            df = ev.score(model, tests[test["name"]], faces_dir(test["dataset"]), conditions,
                          indicators[test["dataset"]], params["evaluate"]["batch_size"], params["evaluate"]["seed"])
            parts.append(df.assign(test_set=test["name"]))
        out = pd.concat(parts, ignore_index=True).assign(protocol=protocol, method=method, seed=seed, train_set=train_set)
        paths.append(scores_path(protocol, method, train_set, seed))
        io.write_parquet(paths[-1], out)
    return paths


def report(params: dict, protocols: list[str] = (), methods: list[str] = ()) -> list[Path]:
    """Metrics and tables of the grid's protocols and methods (plus any named here),
    so scores left on disk by a method since removed from the grid never show up."""
    from benchmark import metrics, provenance
    from benchmark.report import render_report
    protocols = {*params["grid"]["protocols"], *protocols}
    methods = {*params["grid"]["methods"], *methods}
    files = sorted(f for f in Path("results/scores").glob("*/*/*.parquet")
                   if f.parent.parent.name in protocols and f.parent.name in methods)
    if not files:
        raise UserError("no scores under results/scores for the grid; run `python -m benchmark run protocol=...` or dvc repro first")
    scores = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    table = metrics.compute_metrics(scores)
    io.write_csv("results/metrics.csv", table)
    io.write_json("results/metrics.json", metrics.metrics_json(table))
    protos = {p: config.load_protocol(p) for p in sorted(table["protocol"].unique())}
    prov = provenance.collect(params, sorted(table["method"].unique(), key=_method_order(params)),
                              sorted(int(s) for s in table["seed"].unique()), sorted(table["train_set"].unique()))
    return [Path("results/metrics.csv"), Path("results/metrics.json"), *render_report(table, prov, protos, Path("results"))]


def run(params: dict, protocol: str, methods: list[str] | None = None) -> list[Path]:
    """Everything ``protocol`` needs, skipping each stage whose outputs are current."""
    todo = [("evaluate", {"protocol": protocol, "method": m, "seed": s})
            for m in methods or params["grid"]["methods"] for s in params["grid"]["seeds"]]
    done: set[str] = set()
    for stage, args in _in_order(todo, params):
        if stamps.name(stage, args) in done:
            continue
        done.add(stamps.name(stage, args))
        if stamps.is_current(stage, args, stage_key(stage, params, **args), outputs(stage, params, **args)):
            print(f"[skip] {stamps.name(stage, args)}: up to date")
        else:
            print(f"[run]  {stamps.name(stage, args)}")
            STAGE_FUNCTIONS[stage](params, **args)
    return report(params, [protocol], methods or [])


def _in_order(todo, params):
    for stage, args in todo:
        yield from _in_order(upstream(stage, params, **args), params)
        yield stage, args


# ---------------------------------------------------------------- helpers
STAGE_FUNCTIONS = {"synthesize": synthesize, "extract": extract, "indicators": indicators,
                   "train": train, "evaluate": evaluate}


def build_method(params: dict, name: str):
    cls = registry.get(registry.METHODS, name)
    if name not in params["methods"]:
        raise UserError(f"method {name!r} has no entry under `methods:` in params.yaml; add one with its options")
    return cls(**params["methods"][name])


def dataset_class(params: dict, dataset: str):
    """The registered class of the dataset that ``datasets.<dataset>`` names."""
    return registry.get(registry.DATASETS, _dataset_cfg(params, dataset, check_root=False)["name"])


def _dataset_cfg(params: dict, dataset: str, check_root: bool = True) -> dict:
    if dataset not in params["datasets"]:
        raise UserError(f"unknown dataset {dataset!r}; choose one of: {', '.join(params['datasets'])}")
    cfg = params["datasets"][dataset]
    if check_root and not Path(cfg["root"]).exists():
        raise UserError(f"dataset root {cfg['root']} does not exist; set datasets.{dataset}.root in params.yaml")
    return cfg


def _manifest(dataset: str, quality: str, split: str) -> pd.DataFrame:
    path = faces_dir(dataset) / "manifest.parquet"
    if not path.is_file():
        raise UserError(f"{path} not found; run `python -m benchmark extract dataset={dataset}` first")
    m = pd.read_parquet(path)
    rows = m[(m["quality"] == quality) & (m["split"] == split)]
    if rows.empty:
        raise UserError(f"{path} has no {quality} {split} frames; check extract.qualities in params.yaml")
    return rows


def _indicator(params: dict, dataset: str):
    from benchmark import indicators as ind
    return ind.load_indicator(indicators_json(dataset), params["indicators"])  # a missing file is a UserError


def _method_order(params: dict):
    order = {m: i for i, m in enumerate(params["grid"]["methods"])}
    return lambda m: (order.get(m, len(order)), m)

