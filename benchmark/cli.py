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
    "distort": (("distortion", "severity"), {"dataset": "ff"}),
    "train": (("method",), {"train_set": "ff_c23", "seed": 0}),
    "evaluate": (("method", "protocol"), {"seed": 0}),
    "report": ((), {}),
    "cost": ((), {}),
    "plots": ((), {}),
    "run": (("protocol",), {"method": None}),
    "analyze": (("method",), {"seed": 0, "protocol": "cross_quality"}),
    "list": ((), {}),
    "check-regression": ((), {"rerun": "false"}),
    "update-reference": ((), {"rerun": "true"}),
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
    for key in ("seed", "severity"):
        if key in args:
            try:
                args[key] = int(args[key])
            except ValueError:
                raise UserError(f"{key} must be an integer, got {args[key]!r}") from None
    if "rerun" in args:
        if str(args["rerun"]).lower() not in ("true", "false"):
            raise UserError(f"rerun must be true or false, got {args['rerun']!r}")
        args["rerun"] = str(args["rerun"]).lower() == "true"
    return verb, args, overrides


def main(argv: list[str] | None = None) -> int:
    try:
        verb, args, overrides = parse(sys.argv[1:] if argv is None else argv)
        _single_process_unless_training(verb)
        params = config.load_params(overrides)
        if args.get("method") is not None:  # validate names before any work starts
            pipeline.resolve_method(params, args["method"])  # a registered method or a variant
        if args.get("protocol") is not None:
            config.load_protocol(args["protocol"])
        if verb in ("check-regression", "update-reference"):
            return regression_verb(verb, args["rerun"], params, overrides.get("profile"))
        return dispatch(verb, args, params)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _single_process_unless_training(verb: str) -> None:
    """Under torchrun/srun with several processes only `train` runs (data-parallel); any other
    verb would run once per process, all writing the same files."""
    import os
    if verb == "train" or not {"WORLD_SIZE", "SLURM_STEP_NUM_TASKS"} & set(os.environ):
        return
    from benchmark.engine.distributed import launched_processes
    if launched_processes() > 1:
        raise UserError(f"`{verb}` was started as {launched_processes()} processes (torchrun/srun); only `train` "
                        f"runs data-parallel: run `python -m benchmark {verb} ...` as one process")


def dispatch(verb: str, args: dict, params: dict) -> int:
    if verb == "list":
        print_choices(params)
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


def regression_verb(verb: str, rerun: bool, params: dict, profile: str | None) -> int:
    from benchmark.evaluation import regression
    from benchmark.pipeline.provenance import git_commit
    if rerun:
        pipeline.run_grid(params)
    if verb == "update-reference":
        print(f"wrote {regression.update_reference(params, profile, git_commit())}")
        return 0
    verdict = regression.check_regression(params)
    print(verdict.text())
    return 0 if verdict.ok else 1


def print_choices(params: dict | None = None) -> None:
    rows = {
        "methods": registry.choices(registry.METHODS),
        "method variants": [f"{n} ({root})" for n, root in pipeline.method_variants(params or {"methods": {}}).items()],
        "protocols": config.protocol_names(),
        "datasets": registry.choices(registry.DATASETS),
        "indicator backends": registry.choices(registry.INDICATORS),
        "perturbations": registry.choices(registry.PERTURBATIONS),
        "face detectors": registry.choices(registry.FACE_DETECTORS),
        "distortions": registry.choices(registry.DISTORTIONS),
    }
    for name, values in rows.items():
        print(f"{name + ':':20s}{', '.join(values)}")
