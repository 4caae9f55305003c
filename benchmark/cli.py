"""``python -m benchmark <verb> key=value …``

Verb arguments (``method=dpl``, ``protocol=cross_quality``, …) name what to
act on; every other ``key=value`` overrides params.yaml (dotted keys). Bad
input ends with one line on stderr and exit code 2.
"""
from __future__ import annotations

import sys

from benchmark import config, pipeline, registry
from benchmark.errors import UserError

# verb -> (required arguments, optional arguments with defaults)
VERBS = {
    "synthesize": ((), {"dataset": "ff"}),
    "extract": ((), {"dataset": "ff"}),
    "indicators": ((), {"dataset": "ff"}),
    "train": (("method",), {"train_set": "ff_c23", "seed": 0}),
    "evaluate": (("method", "protocol"), {"seed": 0}),
    "report": ((), {}),
    "run": (("protocol",), {"method": None}),
    "list": ((), {}),
}
HELP = "usage: python -m benchmark {" + ",".join(VERBS) + "} [key=value ...]"


def parse(argv: list[str]) -> tuple[str, dict, dict]:
    if not argv or argv[0] in ("-h", "--help", "help"):
        raise SystemExit(HELP)
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        raise UserError(f"unknown verb {verb!r}; choose one of: {', '.join(VERBS)}")
    required, optional = VERBS[verb]
    args, overrides = dict(optional), {}
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"expected key=value, got {item!r}")
        if key in required or key in optional:
            args[key] = value
        else:
            overrides[key] = value
    missing = [r for r in required if r not in args]
    if missing:
        raise UserError(f"`{verb}` needs {', '.join(f'{m}=…' for m in missing)}")
    if "seed" in args:
        try:
            args["seed"] = int(args["seed"])
        except ValueError:
            raise UserError(f"seed must be an integer, got {args['seed']!r}") from None
    return verb, args, overrides


def main(argv: list[str] | None = None) -> int:
    try:
        verb, args, overrides = parse(sys.argv[1:] if argv is None else argv)
        params = config.load_params(overrides)
        if args.get("method") is not None:  # validate names before any work starts
            registry.get(registry.METHODS, args["method"])
        if args.get("protocol") is not None:
            config.load_protocol(args["protocol"])
        return dispatch(verb, args, params)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def dispatch(verb: str, args: dict, params: dict) -> int:
    if verb == "list":
        print_choices()
        return 0
    if verb == "run":
        outs = pipeline.run(params, args["protocol"], [args["method"]] if args["method"] else None)
    elif verb == "report":
        outs = pipeline.report(params)
    else:
        outs = getattr(pipeline, verb)(params, **args)
    for out in outs if isinstance(outs, list) else [outs]:
        print(f"wrote {out}")
    return 0


def print_choices() -> None:
    rows = {
        "methods": registry.choices(registry.METHODS),
        "protocols": config.protocol_names(),
        "datasets": registry.choices(registry.DATASETS),
        "indicator backends": registry.choices(registry.INDICATORS),
        "perturbations": registry.choices(registry.PERTURBATIONS),
        "face detectors": registry.choices(registry.FACE_DETECTORS),
    }
    for name, values in rows.items():
        print(f"{name + ':':20s}{', '.join(values)}")
