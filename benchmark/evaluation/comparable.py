"""Which params made a set of metrics, so that the regression check compares like with like.

``grid_params(params)``: the params that decide a grid's AUCs, flattened to dotted keys:
every section except those that only shape outputs (``IGNORED``: metrics, report, plots, cost,
regression) and the keys that only schedule the work (``SCHEDULING``: grid.jobs), and of
``methods`` only the entries the grid uses (``grid.methods``, the methods its protocols list,
and their ``base:`` chains). ``record(params)`` = that dict and its
``params_hash``; the report stage writes it beside metrics.csv (``RECORD``) and
``update-reference`` copies it into the reference.

``differences(reference, current, params)``: the keys whose values differ. A key the reference
does not have (added to params.yaml since) counts as equal when it is at its declared default
(``benchmark.schema``; a method option: its constructor's default), since adding a key with the
old behaviour as its default changes nothing the reference measured.

``describe(flat)``: "the default params.yaml" or "profile ci" when the params are exactly
those of params.yaml under that profile, else their hash.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from benchmark import config, registry, schema
from benchmark.schema import methods as method_schema

IGNORED = ("metrics", "report", "plots", "cost", "regression")
# keys that schedule the work without changing a number: how many stages run at once (each
# stage's torch threads are grid.threads, which stays part of the comparison)
SCHEDULING = ("grid.jobs",)
RECORD = Path("results/metrics_params.json")
_MISSING = object()
ABSENT = "(not in the reference)"


def _flat(node, prefix: str, out: dict) -> dict:
    for k, v in node.items():
        if isinstance(v, dict) and v:
            _flat(v, f"{prefix}{k}.", out)
        else:
            out[f"{prefix}{k}"] = v
    return out


def _grid_entries(params: dict) -> list[str]:
    entries, names = params.get("methods") or {}, list(params["grid"]["methods"])
    for p in set(params["grid"]["protocols"]) & set(config.protocol_names()):
        names += [str(m["name"] if isinstance(m, dict) else m) for m in config.load_protocol(p).get("methods") or []]
    out = []
    while names:
        name = names.pop(0)
        if name in entries and name not in out:
            out.append(name)
            base = (entries[name] or {}).get("base")
            names += [str(base)] if base is not None else []
    return out


def grid_params(params: dict) -> dict:
    flat = {}
    for section, node in params.items():
        if section in IGNORED or section == "methods":
            continue
        _flat(node, f"{section}.", flat) if isinstance(node, dict) else flat.setdefault(section, node)
    for name in _grid_entries(params):
        _flat(params["methods"][name] or {}, f"methods.{name}.", flat)
    for key in SCHEDULING:
        flat.pop(key, None)
    return json.loads(json.dumps(flat, sort_keys=True, default=str))


def params_hash(flat: dict) -> str:
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:16]


def record(params: dict) -> dict:
    flat = grid_params(params)
    return {"params_hash": params_hash(flat), "params": flat}


def _default(key: str, params: dict):
    section, _, rest = key.partition(".")
    if section in schema.SECTIONS:
        decl = schema.SECTIONS[section]
        hit = next((k for k in decl if rest == k or rest.startswith(k + ".")), None)
        if hit is None:
            return _MISSING
        value = decl[hit].default
        for part in rest[len(hit) + 1:].split(".") if rest != hit else ():
            value = value.get(part, _MISSING) if isinstance(value, dict) else _MISSING
        return value
    entry, _, option = rest.partition(".")
    if section == "datasets" and option in schema.DATASET_ENTRY:
        return schema.DATASET_ENTRY[option].default
    if section == "methods" and entry in params.get("methods", {}):
        root, cur = entry, entry
        while cur is not None and cur in params["methods"]:
            root, cur = cur, (params["methods"][cur] or {}).get("base")
        arg = method_schema.signature(registry.get(registry.METHODS, root)).get(option)
        return _MISSING if arg is None or arg.default is arg.empty else arg.default
    return _MISSING


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def differences(reference: dict, current: dict, params: dict) -> list[tuple[str, object, object]]:
    """[(key, reference value, current value)] of the keys that make the two grids differ; keys
    both record come first, then those only the current params have (reference value ABSENT)."""
    changed, added = [], []
    for key in sorted(set(reference) | set(current)):
        ref, cur = reference.get(key, _MISSING), current.get(key, _MISSING)
        if cur is _MISSING:
            continue  # a key removed since: nothing can set it any more
        if ref is _MISSING:
            default = _default(key, params)
            if default is _MISSING or not _same(default, cur):
                added.append((key, ABSENT, cur))
        elif not _same(ref, cur):
            changed.append((key, ref, cur))
    return changed + added


def describe(flat: dict) -> str:
    h = params_hash(flat)
    for profile in [None, *sorted(p.stem for p in Path("profiles").glob("*.yaml"))]:
        try:
            other = grid_params(config.load_params({"profile": profile} if profile else {}))
        except Exception:  # noqa: BLE001 - a profile that no longer applies names nothing
            continue
        if params_hash(other) == h:
            return f"profile {profile}" if profile else "the default params.yaml"
    return f"params {h}"


def show_differences(diffs: list, limit: int = 3) -> str:
    shown = "; ".join(f"{k}: {a if a is ABSENT else json.dumps(a)} vs {json.dumps(b)}" for k, a, b in diffs[:limit])
    return shown + (f"; and {len(diffs) - limit} more" if len(diffs) > limit else "")
