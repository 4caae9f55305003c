"""What params.yaml and the protocol files ask for, and where each stage's outputs live.

Pure functions of params and protocols (no torch): train set ids
``<dataset>_<quality>[_<manipulation>...]``, a protocol's train sets, test sets and methods,
method entries resolved through ``base:`` (variants), dataset entries. ``pipeline.graph``
builds the stages from them.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from benchmark.errors import UserError
from benchmark.pipeline import code


def faces_dir(dataset: str) -> Path:
    return Path("data/faces") / dataset


def distorted_name(dataset: str, distortion: str, severity: int) -> str:
    """The faces folder of ``dataset``'s crops under a whole-frame distortion (robustness)."""
    return f"{dataset}@{distortion}{int(severity)}"


def indicators_json(dataset: str) -> Path:
    return Path("data/indicators") / f"{dataset}.json"


def model_dir(train_set: str, method: str, seed) -> Path:
    return Path("models") / train_set / method / f"seed{seed}"


def scores_path(protocol: str, method: str, train_set: str, seed) -> Path:
    return Path("results/scores") / protocol / method / f"{train_set}_seed{seed}.parquet"


def analysis_dir(method: str) -> Path:
    """Where ``analyze`` writes a method's CSVs and plots (the grid's first seed)."""
    return Path("results/analysis") / method


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


def protocol_methods(proto: dict) -> list[str]:
    """The methods entries a protocol lists under ``methods:`` (names or {name, label}), else []."""
    return [str(m["name"] if isinstance(m, dict) else m) for m in proto.get("methods") or []]


def base_chain(params: dict, name: str) -> list[str]:
    """``name`` and the entries its ``base:`` chain passes through, the registered root last."""
    entries, chain, cur = params["methods"], [], name
    while True:
        if cur not in entries:
            if cur == name:
                code.method_module(name)  # an unknown name lists the registered ones
                raise UserError(f"method {name!r} has no entry under `methods:` in params.yaml; add one with its options")
            raise UserError(f"methods.{chain[-1]}.base={cur!r} names no entry under `methods:` in params.yaml")
        if cur in chain:
            raise UserError(f"methods.{name}: the `base:` chain {' -> '.join(chain + [cur])} is a cycle")
        chain.append(cur)
        base = (entries[cur] or {}).get("base")
        if base is None:
            code.method_module(cur)
            return chain
        cur = str(base)


#: keys of a ``methods`` entry that are not options of its class: ``base`` (a variant's base
#: entry) and ``train`` (the entry's own values of these params ``train`` keys: ``train_cfg``)
ENTRY_KEYS = ("base", "train")
ENTRY_TRAIN_KEYS = ("optimizer", "param_scheduler", "clip_grad", "batch_size")


def resolve_method(params: dict, name: str) -> tuple[str, dict]:
    """(registered name, options) of the ``methods.<name>`` entry. An entry with ``base: <other
    entry>`` inherits that entry's options (recursively; its own keys win) and its class."""
    chain, opts = base_chain(params, name), {}
    for entry in chain:
        opts = {**{k: v for k, v in (params["methods"][entry] or {}).items() if k not in ENTRY_KEYS}, **opts}
    return chain[-1], opts


def entry_train(params: dict, name: str) -> dict:
    """The ``train`` keys the ``methods.<name>`` entry (or one on its ``base:`` chain; the nearer
    entry's win) sets for its own training: any of ENTRY_TRAIN_KEYS, e.g. ``{optimizer: {lr: 1e-4}}``."""
    out = {}
    for entry in reversed(base_chain(params, name)):
        part = (params["methods"][entry] or {}).get("train") or {}
        bad = sorted(set(part) - set(ENTRY_TRAIN_KEYS)) if isinstance(part, dict) else [part]
        if bad:
            raise UserError(f"methods.{entry}.train: {bad} cannot be set per method; it takes a mapping of "
                            f"{', '.join(ENTRY_TRAIN_KEYS)} (the keys of params `train` they replace)")
        out.update(part)
    return out


def train_cfg(params: dict, name: str) -> dict:
    """params ``train`` as ``name`` trains with it: the entry's ``train`` keys over params'
    (a mapping such as ``optimizer`` is merged key by key, as mmengine merges configs). Under
    ``train.recipe: own`` a method's original recipe still replaces what it declares."""
    cfg = dict(params["train"])
    for key, value in entry_train(params, name).items():
        both = isinstance(value, dict) and isinstance(cfg.get(key), dict)
        cfg[key] = {**cfg[key], **value} if both else value
    return cfg


def reused_stage(params: dict, method: str, base: str) -> str | None:
    """What training ``method`` would take from ``base``'s training on the same train set:
    ``"final"`` (the same class and options: the base's model), the name of a stage
    (``Method.reused_stage``: the base's training up to the end of that stage), or None (it
    trains). Decided from params alone, so the DAG has a model-to-model edge only where a
    training reads another's model (``pipeline.graph``) and the stage does the same
    (``pipeline.stages.train``)."""
    (root, opts), (base_root, base_opts) = resolve_method(params, method), resolve_method(params, base)
    if root != base_root or entry_train(params, method) != entry_train(params, base):
        return None
    if opts == base_opts:
        return "final"
    return registered_class("METHODS", root).reused_stage(opts, base_opts)


def method_variants(params: dict) -> dict[str, str]:
    """{variant entry: its registered root} for every ``methods`` entry with a ``base``."""
    return {n: resolve_method(params, n)[0] for n, e in params["methods"].items() if (e or {}).get("base")}


def registered_class(kind: str, name: str):
    """The class registered as ``name`` in ``registry.<kind>`` (``"METHODS"``, ``"DATASETS"``),
    importing only the module that registers it."""
    from benchmark import registry
    reg = getattr(registry, kind)
    module = code.registered(kind).get(name)
    if module is not None:
        importlib.import_module(module)
        found = reg.get(name)
        if found is not None:
            return found
    return registry.get(reg, name)  # unknown: a one-line error listing the choices


def dataset_class(params: dict, dataset: str):
    """The registered class of the dataset that ``datasets.<dataset>`` names."""
    return registered_class("DATASETS", dataset_cfg(params, dataset, check_root=False)["name"])


def is_synthetic(params: dict, dataset: str) -> bool:
    """Whether ``datasets.<dataset>`` is generated by the harness (its class's ``synthetic``)."""
    name = dataset_cfg(params, dataset, check_root=False)["name"]
    if name not in code.registered("DATASETS"):
        dataset_class(params, dataset)  # a one-line error listing the choices
    return bool(code.class_attr("DATASETS", name, "synthetic", False))


def dataset_cfg(params: dict, dataset: str, check_root: bool = True) -> dict:
    if dataset not in params["datasets"]:
        raise UserError(f"unknown dataset {dataset!r}; choose one of: {', '.join(params['datasets'])}")
    cfg = params["datasets"][dataset]
    if check_root and not Path(cfg["root"]).exists():
        raise UserError(f"dataset root {cfg['root']} does not exist; set datasets.{dataset}.root in params.yaml")
    return cfg


RESULTS = Path("results")


def metrics_paths(protocol: str) -> dict[str, Path]:
    """Where ``metrics-<protocol>`` writes: tidy metrics, significance, DVC headline, curves."""
    return {"csv": RESULTS / "metrics" / f"{protocol}.csv", "json": RESULTS / "metrics" / f"{protocol}.json",
            "significance": RESULTS / "significance" / f"{protocol}.csv", "curves": RESULTS / "curves" / protocol}


MODEL_CURVES = RESULTS / "curves" / "models"
