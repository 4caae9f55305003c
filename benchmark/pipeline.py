"""The stages of DESIGN §3 as library functions, and ``run``, which chains them.

Each DVC stage calls one CLI verb, which calls one function here. ``STAGES``
declares, per stage, the params.yaml keys and code it reads; dvc.yaml declares
the same (a test keeps the two in step), and ``run`` uses them to fingerprint a
stage and skip it when its outputs were made from the same inputs.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pandas as pd

from benchmark import config, io, registry
from benchmark.errors import UserError

STAMPS = Path(".benchmark/stamps")

# stage -> (params keys it reads, code it runs); "{method}" is filled per method
STAGES = {
    "synthesize": (["synthff"], ["benchmark/data/synthff.py", "benchmark/data/_synthff_draw.py", "benchmark/data/layout.py"]),
    "extract": (["extract", "datasets"], ["benchmark/data/extract.py", "benchmark/data/faces.py", "benchmark/data/layout.py"]),
    "indicators": (["indicators"], ["benchmark/indicators"]),
    "train": (["train", "methods.{method}"], ["benchmark/engine.py", "benchmark/method.py", "methods/{method}.py"]),
    "evaluate": (["evaluate", "indicators", "methods.{method}"], ["benchmark/evaluate.py", "benchmark/perturb.py"]),
    "report": (["report", "grid"], ["benchmark/metrics.py", "benchmark/report"]),
}


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
    return f"{spec['dataset']}_{spec['quality']}"


def parse_train_set(name: str, params: dict) -> dict:
    dataset, _, quality = name.rpartition("_")
    if dataset not in params["datasets"] or quality not in ("raw", "c23", "c40"):
        valid = [f"{d}_{q}" for d in params["datasets"] for q in ("raw", "c23", "c40")]
        raise UserError(f"unknown train_set {name!r}; choose one of: {', '.join(valid)}")
    return {"dataset": dataset, "quality": quality, "split": "train"}


# ---------------------------------------------------------------- fingerprints
def fingerprint(stage: str, params: dict, upstream: list[str] = (), **args) -> str:
    keys, code = STAGES[stage]
    h = hashlib.sha256(json.dumps([stage, args, list(upstream)], sort_keys=True).encode())
    for key in keys:
        h.update(json.dumps(config.subtree(params, key.format(**args)), sort_keys=True, default=str).encode())
    for pattern in code:
        path = Path(pattern.format(**args))
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(f.read_bytes() if f.is_file() else b"")
    return h.hexdigest()[:16]


def _up_to_date(name: str, key: str, outputs: list[Path]) -> bool:
    stamp = STAMPS / f"{name}.json"
    return stamp.is_file() and json.loads(stamp.read_text()).get("key") == key and all(p.exists() for p in outputs)


def _stamp(name: str, key: str) -> None:
    io.write_json(STAMPS / f"{name}.json", {"key": key})


# ---------------------------------------------------------------- stages
def synthesize(params: dict) -> Path:
    from benchmark.data import synthff
    root = Path(params["datasets"]["ff"]["root"])
    synthff.synthesize(params["synthff"], root)
    return root


def extract(params: dict, dataset: str) -> Path:
    from benchmark.data import extract as ex
    out = faces_dir(dataset)
    ex.extract_from_params(_dataset_cfg(params, dataset), params["extract"], out)
    return out / "manifest.parquet"


def indicators(params: dict, dataset: str) -> Path:
    from benchmark import indicators as ind
    cfg = _dataset_cfg(params, dataset)
    meta = Path(cfg["root"]) / "metadata.parquet"
    ind.compute_indicators(faces_dir(dataset), Path("data/indicators"), dataset, params["indicators"],
                           metadata=meta if meta.is_file() else None)
    return indicators_json(dataset)


def train(params: dict, method: str, train_set: str, seed: int, key: str = "") -> Path:
    import torch

    from benchmark import engine, perturb
    from benchmark.data.frames import TrainFrames
    spec = parse_train_set(train_set, params)
    rows = _manifest(spec["dataset"], spec["quality"], spec["split"])
    augment = perturb.RandomJPEG() if params["train"]["jpeg_aug"] else None
    data = TrainFrames(rows, faces_dir(spec["dataset"]), seed=seed, augment=augment)
    torch.manual_seed(seed)
    model = build_method(params, method)
    indicator = _indicator(params, spec["dataset"])
    out = model_dir(train_set, method, seed)
    engine.train(model, data, out, params["train"], seed, levels=indicator.levels,
                 fingerprint=key or fingerprint("train", params, method=method, train_set=train_set, seed=seed))
    return out / "model.pt"


def evaluate(params: dict, protocol: str, method: str, seed: int) -> Path:
    from benchmark import engine, evaluate as ev
    proto = config.load_protocol(protocol)
    train_set = train_set_id(proto["train_set"])
    model = engine.load_trained(build_method(params, method), model_dir(train_set, method, seed))
    conditions = registry.get(registry.PERTURBATIONS, proto["conditions"])()
    parts = []
    for test in proto["test_sets"]:
        rows = _manifest(test["dataset"], test["quality"], test["split"])
        indicator = _indicator(params, test["dataset"])
        df = ev.score(model, rows, faces_dir(test["dataset"]), conditions, indicator,
                      params["evaluate"]["batch_size"], params["evaluate"]["seed"])
        parts.append(df.assign(test_set=test["name"]))
    out = pd.concat(parts, ignore_index=True).assign(protocol=protocol, method=method, seed=seed, train_set=train_set)
    path = scores_path(protocol, method, train_set, seed)
    io.write_parquet(path, out)
    return path


def report(params: dict) -> list[Path]:
    from benchmark import metrics
    from benchmark import provenance
    from benchmark.report import render_report
    files = sorted(Path("results/scores").glob("*/*/*.parquet"))
    if not files:
        raise UserError("no scores under results/scores; run `python -m benchmark run protocol=...` or dvc repro first")
    scores = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    table = metrics.compute_metrics(scores)
    io.write_csv("results/metrics.csv", table)
    io.write_json("results/metrics.json", metrics.metrics_json(table))
    protos = {p: config.load_protocol(p) for p in sorted(table["protocol"].unique())}
    prov = provenance.collect(params, sorted(table["method"].unique(), key=_method_order(params)),
                              sorted(int(s) for s in table["seed"].unique()), sorted(table["train_set"].unique()))
    return [Path("results/metrics.csv"), Path("results/metrics.json"), *render_report(table, prov, protos, Path("results"))]


def run(params: dict, protocol: str, methods: list[str] | None = None) -> list[Path]:
    """Everything ``protocol`` needs, skipping each stage whose inputs are unchanged."""
    proto = config.load_protocol(protocol)
    methods = methods or params["grid"]["methods"]
    seeds = params["grid"]["seeds"]
    datasets = sorted({proto["train_set"]["dataset"], *(t["dataset"] for t in proto["test_sets"])})
    up = []
    if any(params["datasets"][d]["name"] == "synthff" for d in datasets):
        up.append(_step("synthesize", params, [Path(params["datasets"]["ff"]["root"])], [], lambda: synthesize(params)))
    for d in datasets:
        k = _step(f"extract-{d}", params, [faces_dir(d) / "manifest.parquet"], up, lambda d=d: extract(params, d), stage="extract")
        up.append(_step(f"indicators-{d}", params, [indicators_json(d)], [k], lambda d=d: indicators(params, d), stage="indicators"))
    train_set = train_set_id(proto["train_set"])
    for m in methods:
        for s in seeds:
            key = fingerprint("train", params, up, method=m, train_set=train_set, seed=s)
            k = _step(f"train-{train_set}-{m}-seed{s}", params, [model_dir(train_set, m, s) / "model.pt"], up,
                      lambda m=m, s=s, key=key: train(params, m, train_set, s, key=key), key=key)
            _step(f"evaluate-{protocol}-{m}-seed{s}", params, [scores_path(protocol, m, train_set, s)], [k],
                  lambda m=m, s=s: evaluate(params, protocol, m, s), stage="evaluate", method=m,
                  extra=(Path("protocols") / f"{protocol}.yaml").read_text())
    return report(params)


def _step(name, params, outputs, upstream, fn, stage=None, key=None, extra="", **args) -> str:
    key = key or fingerprint(stage or name, params, [*upstream, extra], **args)
    if _up_to_date(name, key, outputs):
        print(f"[skip] {name}: up to date")
        return key
    print(f"[run]  {name}")
    fn()
    _stamp(name, key)
    return key


# ---------------------------------------------------------------- helpers
def build_method(params: dict, name: str):
    cls = registry.get(registry.METHODS, name)
    if name not in params["methods"]:
        raise UserError(f"method {name!r} has no entry under `methods:` in params.yaml; add one with its options")
    return cls(**params["methods"][name])


def _dataset_cfg(params: dict, dataset: str) -> dict:
    if dataset not in params["datasets"]:
        raise UserError(f"unknown dataset {dataset!r}; choose one of: {', '.join(params['datasets'])}")
    cfg = params["datasets"][dataset]
    if not Path(cfg["root"]).exists():
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
    path = indicators_json(dataset)
    if not path.is_file():
        raise UserError(f"{path} not found; run `python -m benchmark indicators dataset={dataset}` first")
    return ind.load_indicator(path, params["indicators"])


def _method_order(params: dict):
    order = {m: i for i, m in enumerate(params["grid"]["methods"])}
    return lambda m: (order.get(m, len(order)), m)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
        return out.stdout.strip() + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
