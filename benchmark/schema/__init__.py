"""What every params value may be, checked before anything runs, and documented from the same
declaration (``python -m benchmark list params``).

- ``validate(params)``: every section and key of params.yaml (after profile and overrides)
  against ``sections.SECTIONS`` and ``sections.DATASET_ENTRY``, and the names one key gives
  another (grid methods and protocols, the reference method, indicator edges, distortion
  options); the first bad value is one ``UserError`` naming the key, the value and what is
  allowed.
- ``check_protocol(proto, params)``: the values of a ``protocols/<name>.yaml`` the run reads.
- ``methods.check_options`` / ``methods.dry_build``: a method entry's options (constructor
  arguments) and the method built once on the meta device.
- ``describe(params)``: (key, allowed, default, doc) rows of every declared key, the dataset
  entry keys and each registered method's options.
"""
from __future__ import annotations

from benchmark import registry
from benchmark.errors import UserError
from benchmark.schema import methods  # noqa: F401  (benchmark.schema.methods)
from benchmark.schema.keys import Choice, Dict, Int, Key, List, Str, _show
from benchmark.schema.sections import DATASET_ENTRY, LEVELS, QUALITIES, REQUIRED_DATASET_KEYS, SECTIONS, SPLITS, TOP

DYNAMIC = ("datasets", "methods")  # sections whose entries the user names


def flatten(node: dict, keys: dict, where: str, path: str = "") -> dict:
    """{dotted key: value} of a section, descending into mappings the declaration nests."""
    out = {}
    for name, value in node.items():
        dotted = f"{path}{name}"
        nested = [k for k in keys if k.startswith(dotted + ".")]
        if dotted in keys:
            out[dotted] = value
        elif nested and isinstance(value, dict):
            out.update(flatten(value, keys, where, dotted + "."))
        elif nested:
            inner = ", ".join(k[len(dotted) + 1:] for k in nested)
            raise UserError(f"{where}.{dotted}={_show(value)} is not allowed: expected a mapping with {inner}")
        else:
            raise UserError(f"{where}.{dotted} is not a known key; {where} has {', '.join(keys)}")
    return out


def check_section(where: str, node, keys: dict, required=None) -> dict:
    if not isinstance(node, dict):
        raise UserError(f"{where} must be a mapping of {', '.join(keys)}, got {_show(node)}")
    flat = flatten(node, keys, where)
    for name in (keys if required is None else required):
        if name not in flat:
            raise UserError(f"{where}.{name} is missing; add it to params.yaml ({keys[name].doc}; "
                            f"e.g. {_show(keys[name].default)})")
    for name, value in flat.items():
        keys[name].check(f"{where}.{name}", value)
    return flat


def validate(params: dict) -> None:
    extra = sorted(set(params) - set(SECTIONS) - set(DYNAMIC) - set(TOP))
    if extra:
        raise UserError(f"params.yaml section {extra[0]!r} is not declared; sections: "
                        f"{', '.join([*TOP, *SECTIONS, *DYNAMIC])} (benchmark/schema/sections.py)")
    for name, key in TOP.items():  # optional: a missing one takes its default
        if name in params:
            key.check(name, params[name])
    for name in DYNAMIC:
        if not isinstance(params.get(name), dict) or not params[name]:
            raise UserError(f"params.yaml needs a non-empty mapping `{name}:` of named entries")
    for section, keys in SECTIONS.items():
        check_section(section, params.get(section), keys)
    for name, entry in params["datasets"].items():
        check_section(f"datasets.{name}", entry, DATASET_ENTRY, REQUIRED_DATASET_KEYS)
    for name, entry in params["methods"].items():
        if entry is not None and not isinstance(entry, dict):
            raise UserError(f"methods.{name} must be a mapping of options, got {_show(entry)}")
    _check_names(params)


def _one_of(key: str, value, allowed) -> None:
    if value not in allowed:
        raise UserError(f"{key}={_show(value)} is not allowed: expected one of {', '.join(map(str, allowed))}")


def _check_names(params: dict) -> None:
    from benchmark import config
    entries = list(params["methods"])
    for m in params["grid"]["methods"]:
        _one_of("grid.methods element", m, entries)
    for p in params["grid"]["protocols"]:
        _one_of("grid.protocols element", p, config.protocol_names())
    _one_of("metrics.reference_method", params["metrics"]["reference_method"], entries)
    for name, entry in params["datasets"].items():
        if entry.get("indicator_edges") is not None:
            _one_of(f"datasets.{name}.indicator_edges", entry["indicator_edges"], list(params["datasets"]))
    for code, opts in params["distort"]["options"].items():
        _one_of("distort.options key", code, registry.choices(registry.DISTORTIONS))
        Dict({}, "").check(f"distort.options.{code}", opts)


PROTOCOL = {  # the keys of a protocol file that runs read (its table spec is the report's)
    "test_sets": List(None, "", min_len=1, item=Dict({}, "", fields={
        "name": Str("", ""), "quality": Choice("", "", choices=QUALITIES), "split": Choice("", "", choices=SPLITS)})),
    "conditions": Choice("", "", choices=lambda: registry.choices(registry.PERTURBATIONS)),
    "levels": List(None, "", item=Choice("", "", choices=LEVELS), min_len=1),
    "frames_per_video": Int(None, "", min=1, nullable=True),
    "distortions": Dict(None, "", nullable=True, fields={
        "codes": List([], "", min_len=1, item=Choice("", "", choices=lambda: registry.choices(registry.DISTORTIONS))),
        "severities": List([], "", min_len=1, item=Int(1, "", min=1, max=5))}),
}


def check_protocol(proto: dict, params: dict) -> None:
    where = f"protocols/{proto.get('name')}.yaml"
    for name in ("test_sets", "conditions"):
        if name not in proto:
            raise UserError(f"{where} lacks `{name}`")
    for name, key in PROTOCOL.items():
        if name in proto:
            key.check(f"{where}: {name}", proto[name])
    for i, t in enumerate(proto["test_sets"]):
        for field in ("name", "dataset", "quality", "split"):
            if field not in t:
                raise UserError(f"{where}: test_sets[{i}] lacks `{field}`")
        _one_of(f"{where}: test_sets[{i}].dataset", t["dataset"], list(params["datasets"]))
    for m in proto.get("methods") or []:
        _one_of(f"{where}: methods element", m["name"] if isinstance(m, dict) else m, list(params["methods"]))


def describe(params: dict | None = None) -> list[tuple[str, str, str, str]]:
    """(key, allowed, default, doc) of every declared key, dataset entry key and method option."""
    rows = [(k, key.allowed(), _show(key.default), key.doc) for k, key in TOP.items()]
    rows += [(f"{s}.{k}", key.allowed(), _show(key.default), key.doc) for s, keys in SECTIONS.items()
             for k, key in keys.items()]
    rows += [(f"datasets.<id>.{k}", key.allowed(), _show(key.default),
              key.doc + (" (required)" if k in REQUIRED_DATASET_KEYS else "")) for k, key in DATASET_ENTRY.items()]
    for name in registry.choices(registry.METHODS):
        cls = registry.get(registry.METHODS, name)
        hints = methods.annotations(cls)
        for arg, p in methods.signature(cls).items():
            default = "(required)" if p.default is p.empty else _show(p.default)
            kind = methods.describe(hints[arg]) if arg in hints else "any"
            rows.append((f"methods.<{name} entry>.{arg}", kind, default, f"{cls.__name__} option"))
    return rows


__all__ = ["Key", "TOP", "SECTIONS", "DATASET_ENTRY", "validate", "check_protocol", "check_section", "describe",
           "flatten", "methods"]
