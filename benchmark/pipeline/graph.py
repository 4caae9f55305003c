"""The pipeline as a graph: where each stage's outputs live, which stages it reads
(``upstream``), and the key that says whether its outputs are current (``stage_key``).

Pure functions of params.yaml and the protocol files; ``benchmark.pipeline`` runs the stages.
Train set ids are ``<dataset>_<quality>[_<manipulation>...]``; a methods entry may be a
variant of another (``base:``, ``resolve_method``).
"""
from __future__ import annotations

from pathlib import Path

from benchmark import config, registry
from benchmark.pipeline import stamps
from benchmark.errors import UserError


def faces_dir(dataset: str) -> Path:
    return Path("data/faces") / dataset


def distorted_name(dataset: str, distortion: str, severity: int) -> str:
    """The faces folder of ``dataset``'s crops under a whole-frame distortion (robustness)."""
    return f"{dataset}@{distortion}{int(severity)}"


def test_sets(proto: dict) -> list[dict]:
    """The protocol's test sets, each with ``faces``, the faces folder it reads. A protocol
    with ``distortions: {codes: [...], severities: [...]}`` gets every test set under every
    code × severity (faces ``<dataset>@<code><severity>``, scores labelled perturbation = code,
    severity = severity)."""
    base = [{**t, "faces": t["dataset"]} for t in proto["test_sets"]]
    dist = proto.get("distortions")
    if not dist:
        return base
    return [{**t, "faces": distorted_name(t["dataset"], c, s), "perturbation": str(c), "severity": int(s)}
            for t in base for c in dist["codes"] for s in dist["severities"]]


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


def upstream(stage: str, params: dict, **a) -> list[tuple[str, dict]]:
    """The stages whose outputs ``stage`` reads."""
    if stage == "extract":
        return [("synthesize", {"dataset": a["dataset"]})] if dataset_class(params, a["dataset"]).synthetic else []
    if stage == "indicators":
        edges = dataset_cfg(params, a["dataset"], check_root=False).get("indicator_edges")
        return [("extract", {"dataset": a["dataset"]})] + ([("indicators", {"dataset": edges})] if edges else [])
    if stage == "distort":
        return [("extract", {"dataset": a["dataset"]})]
    if stage == "train":
        return [("indicators", {"dataset": parse_train_set(a["train_set"], params)["dataset"]})]
    if stage == "evaluate":
        proto = config.load_protocol(a["protocol"])
        trains = [("train", {"method": a["method"], "train_set": ts, "seed": a["seed"]}) for ts in protocol_train_sets(proto)]
        distorted = [("distort", {"dataset": t["dataset"], "distortion": t["perturbation"], "severity": t["severity"]})
                     for t in test_sets(proto) if "perturbation" in t]
        return [*trains, *(("indicators", {"dataset": d}) for d in sorted({t["dataset"] for t in proto["test_sets"]})),
                *distorted]
    return []


def stage_key(stage: str, params: dict, **a) -> str:
    up = [stage_key(s, params, **b) for s, b in upstream(stage, params, **a)]
    if stage == "evaluate":  # the protocol file is an input too
        up.append((Path("protocols") / f"{a['protocol']}.yaml").read_text())
    if "method" in a:  # a variant is fingerprinted by its resolved options and its root's code
        root, opts = resolve_method(params, a["method"])
        params = {**params, "methods": {**params["methods"], a["method"]: {"registered": root, **opts}}}
        return stamps.fingerprint(stage, params, up, code_args={"method": root}, **a)
    return stamps.fingerprint(stage, params, up, **a)


def outputs(stage: str, params: dict, **a) -> list[Path]:
    if stage == "synthesize":
        return [Path(params["datasets"][a["dataset"]]["root"])]
    if stage == "extract":
        return [faces_dir(a["dataset"]) / "manifest.parquet"]
    if stage == "indicators":
        return [indicators_json(a["dataset"])]
    if stage == "distort":
        return [faces_dir(distorted_name(a["dataset"], a["distortion"], a["severity"])) / "manifest.parquet"]
    if stage == "train":
        return [model_dir(a["train_set"], a["method"], a["seed"]) / "model.pt"]
    proto = config.load_protocol(a["protocol"])
    return [scores_path(a["protocol"], a["method"], ts, a["seed"]) for ts in protocol_train_sets(proto)]


def in_order(todo, params):
    for stage, args in todo:
        yield from in_order(upstream(stage, params, **args), params)
        yield stage, args


def protocol_methods(proto: dict) -> list[str]:
    """The methods entries a protocol lists under ``methods:`` (names or {name, label}), else []."""
    return [str(m["name"] if isinstance(m, dict) else m) for m in proto.get("methods") or []]


def resolve_method(params: dict, name: str) -> tuple[str, dict]:
    """(registered name, options) of the ``methods.<name>`` entry. An entry with ``base: <other
    entry>`` inherits that entry's options (recursively; its own keys win) and its class."""
    entries, chain, opts, cur = params["methods"], [], {}, name
    while True:
        if cur not in entries:
            if cur == name:
                registry.get(registry.METHODS, name)  # an unknown name lists the registered ones
                raise UserError(f"method {name!r} has no entry under `methods:` in params.yaml; add one with its options")
            raise UserError(f"methods.{chain[-1]}.base={cur!r} names no entry under `methods:` in params.yaml")
        if cur in chain:
            raise UserError(f"methods.{name}: the `base:` chain {' -> '.join(chain + [cur])} is a cycle")
        chain.append(cur)
        entry = dict(entries[cur] or {})
        base = entry.pop("base", None)
        opts = {**entry, **opts}
        if base is None:
            registry.get(registry.METHODS, cur)
            return cur, opts
        cur = str(base)


def method_variants(params: dict) -> dict[str, str]:
    """{variant entry: its registered root} for every ``methods`` entry with a ``base``."""
    return {n: resolve_method(params, n)[0] for n, e in params["methods"].items() if (e or {}).get("base")}


def dataset_class(params: dict, dataset: str):
    """The registered class of the dataset that ``datasets.<dataset>`` names."""
    return registry.get(registry.DATASETS, dataset_cfg(params, dataset, check_root=False)["name"])


def dataset_cfg(params: dict, dataset: str, check_root: bool = True) -> dict:
    if dataset not in params["datasets"]:
        raise UserError(f"unknown dataset {dataset!r}; choose one of: {', '.join(params['datasets'])}")
    cfg = params["datasets"][dataset]
    if check_root and not Path(cfg["root"]).exists():
        raise UserError(f"dataset root {cfg['root']} does not exist; set datasets.{dataset}.root in params.yaml")
    return cfg
