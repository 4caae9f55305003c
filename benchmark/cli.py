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
    "train": (("method",), {"train_set": "ff_c23", "seed": 0, "reuse": None}),
    "evaluate": (("method", "protocol"), {"seed": 0}),
    "metrics": (("protocol",), {}),
    "report": ((), {}),
    "cost": ((), {}),
    "plots": ((), {}),
    "run": ((), {"protocol": None, "method": None, "jobs": None}),
    "jobs": ((), {"protocol": None, "method": None, "wave": None, "all": "false"}),
    "dag": ((), {"check": "false"}),
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
    for key in ("seed", "severity", "jobs", "wave"):
        if args.get(key) is not None:
            try:
                args[key] = int(args[key])
            except ValueError:
                raise UserError(f"{key} must be an integer, got {args[key]!r}") from None
    for key in ("rerun", "all", "check"):
        if key in args:
            if str(args[key]).lower() not in ("true", "false"):
                raise UserError(f"{key} must be true or false, got {args[key]!r}")
            args[key] = str(args[key]).lower() == "true"
    return verb, args, overrides


def main(argv: list[str] | None = None) -> int:
    try:
        verb, args, overrides = parse(sys.argv[1:] if argv is None else argv)
        params = config.load_params(overrides)
        if args.get("method") is not None:  # validate names before any work starts
            pipeline.resolve_method(params, args["method"])  # a registered method or a variant
        if args.get("protocol") is not None:
            config.load_protocol(args["protocol"])
        if verb in ("check-regression", "update-reference"):
            return regression_verb(verb, args["rerun"], params, overrides)
        if verb == "run":
            return run_verb(args, params, overrides)
        return dispatch(verb, args, params)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def dispatch(verb: str, args: dict, params: dict) -> int:
    from benchmark.pipeline import dvcfile
    if verb == "list":
        print_choices(params)
        return 0
    if verb == "dag":
        if args["check"]:
            dvcfile.check(params)
            print(f"{dvcfile.PATH} is current")
        else:
            print(f"wrote {dvcfile.write(params)}")
        return 0
    if verb == "jobs":
        print("\n".join(pipeline.job_lines(params, args["protocol"], args["method"], args["wave"], args["all"])))
        return 0
    outs = stage_verb(verb, args, params)
    for out in outs if isinstance(outs, list) else [outs]:
        print(f"wrote {out}")
    return 0


def stage_verb(verb: str, args: dict, params: dict):
    """One stage, under its lock; under ``dvc repro`` (DVC_STAGE set) only from a current dvc.yaml."""
    import os

    import torch

    from benchmark.pipeline import dvcfile, locks
    if os.environ.get("DVC_STAGE"):
        dvcfile.check(params)
    torch.set_num_threads(int(os.environ.get("BENCHMARK_THREADS", params["grid"]["threads"])))
    call = {k: v for k, v in args.items() if v is not None}
    name = "-".join([verb, *(str(v) for _, v in sorted(call.items()))])
    with locks.stage_lock(name):
        return pipeline.STAGE_FUNCTIONS[verb](params, **call)


def run_verb(args: dict, params: dict, overrides: dict) -> int:
    """``run``: the grid (or one protocol's stages) through DVC's DAG; with overrides, a DVC experiment."""
    jobs = args["jobs"] if args["jobs"] is not None else params["grid"]["jobs"]
    pipeline.run(params, args["protocol"], args["method"], jobs=jobs, threads=params["grid"]["threads"],
                 overrides=overrides)
    return 0


def regression_verb(verb: str, rerun: bool, params: dict, overrides: dict) -> int:
    """With ``rerun``, the grid first (with overrides such as ``profile=ci``: in its own workspace,
    whose metrics are then read), then the check or the rewrite of the reference."""
    from pathlib import Path

    from benchmark.evaluation import regression
    from benchmark.pipeline.provenance import git_commit
    metrics_csv = Path("results/metrics.csv")
    if rerun:
        where = pipeline.run(params, jobs=params["grid"]["jobs"], threads=params["grid"]["threads"],
                             overrides=overrides)
        if overrides:
            metrics_csv = Path(where[0]) / "results/metrics.csv"
    if verb == "update-reference":
        print(f"wrote {regression.update_reference(params, overrides.get('profile'), git_commit(), metrics_csv)}")
        return 0
    verdict = regression.check_regression(params, metrics_csv)
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
