"""params.yaml, protocols/*.yaml and ``key=value`` overrides.

Overrides use dotted keys into params.yaml (``train.epochs=2``); values are
parsed as YAML (``2`` is an int, ``[0,1]`` a list, ``null`` None). A key that
params.yaml does not have is refused with the valid keys at that level, so a
typo never silently does nothing. ``profile=NAME`` first applies the dotted
overrides in ``profiles/NAME.yaml``.
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from benchmark.errors import UserError

PARAMS = "params.yaml"  # relative to the project root = the working directory (as for DVC and make)


def read_yaml(path: Path) -> dict:
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise UserError(f"{path} not found; run from the project root (where params.yaml is)") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping at the top level")
    return data


def load_params(overrides: dict[str, str] | None = None, root: Path | None = None) -> dict:
    """params.yaml with ``profile`` and dotted overrides applied (in memory only)."""
    root = Path(root or Path.cwd())
    params = read_yaml(root / PARAMS)
    overrides = dict(overrides or {})
    profile = overrides.pop("profile", None)
    if profile is not None:
        path = root / "profiles" / f"{profile}.yaml"
        if not path.is_file():
            names = sorted(p.stem for p in (root / "profiles").glob("*.yaml"))
            raise UserError(f"unknown profile {profile!r}; choose one of: {', '.join(names)}")
        params = apply_overrides(params, {k: yaml.safe_dump(v) for k, v in read_yaml(path).items()})
    return apply_overrides(params, overrides)


def apply_overrides(params: dict, overrides: dict[str, str]) -> dict:
    out = copy.deepcopy(params)
    for key, raw in overrides.items():
        node, parts = out, key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                where = ".".join(parts[:i]) or "params.yaml"
                valid = ", ".join(sorted(node)) if isinstance(node, dict) else "(not a mapping)"
                raise UserError(f"unknown key {key!r}: {where} has {valid}")
            if i == len(parts) - 1:
                node[part] = parse_value(key, raw)
            else:
                node = node[part]
    return out


def parse_value(key: str, raw: str):
    try:
        value = yaml.safe_load(raw) if isinstance(raw, str) else raw
    except yaml.YAMLError:
        raise UserError(f"value of {key!r} is not valid YAML: {raw!r}") from None
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string; a number is meant
        try:
            return float(value)
        except ValueError:
            pass
    return value


def protocol_names(root: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (Path(root or Path.cwd()) / "protocols").glob("*.yaml"))


def load_protocol(name: str, root: Path | None = None) -> dict:
    names = protocol_names(root)
    if name not in names:
        raise UserError(f"unknown protocol {name!r}; choose one of: {', '.join(names)}")
    proto = read_yaml(Path(root or Path.cwd()) / "protocols" / f"{name}.yaml")
    proto["name"] = name
    return proto


def figure_specs(proto: dict, kind: str) -> list[dict]:
    """The protocol's ``figures:`` entries of one kind (``{kind: roc, test_set: c40}``, ...), with
    ``test_set`` defaulting to the protocol's first."""
    first = (proto.get("test_sets") or [{}])[0].get("name")
    return [{"test_set": first, **f} for f in proto.get("figures") or [] if (f or {}).get("kind") == kind]


def subtree(params: dict, dotted: str):
    node = params
    for part in dotted.split("."):
        node = node[part]
    return node
