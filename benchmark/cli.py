"""``python -m benchmark <verb> key=value …``

Verb arguments (``method=dpl``, ``protocol=cross_quality``, …) name what to act on; every
other ``key=value`` overrides params.yaml (dotted keys). Before any stage starts, ``preflight``
checks everything the verb will read: every params value (``benchmark.schema``), the protocol
files, the train set ids, and every method it will build, built once on the meta device with
its resolved options (plus, where it trains, each stage's optimiser and schedulers). ``run``
(without overrides) builds the methods once DVC has found a stage to run, before it starts: a
rerun with nothing to do builds no model. Bad input ends with one line on stderr and exit code
2, as does a full disk (the rerun resumes).
"""
from __future__ import annotations

import errno
import sys

from benchmark import config, pipeline, registry, schema
from benchmark.errors import UserError
from benchmark.schema.keys import Bool, Choice, Int, Str

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
    "jobs": ((), {"protocol": None, "method": None, "wave": None, "all": False}),
    "dag": ((), {"check": False}),
    "analyze": (("method",), {"seed": 0, "protocol": "cross_quality"}),
    "list": ((), {"what": "registries"}),
    "check-regression": ((), {"rerun": False}),
    "update-reference": ((), {"rerun": True}),
}
# what each verb argument may be, checked like a params key
ARGS = {
    "dataset": Str("ff", "a datasets entry"),
    "distortion": Choice("CS", "a distortion code", choices=lambda: registry.choices(registry.DISTORTIONS)),
    "severity": Int(1, "distortion severity", min=1, max=5),
    "method": Str(None, "a methods entry"),
    "train_set": Str("ff_c23", "a train set id"),
    "seed": Int(0, "training seed", min=0),
    "protocol": Str("cross_quality", "a protocol name"),
    "rerun": Bool(False, "run the grid first"),
    "what": Choice("registries", "what `list` prints", choices=("registries", "params")),
    "reuse": Str(None, "the methods entry (a variant's base) whose model or checkpoint this one reuses"),
    "jobs": Int(1, "stages `run` runs at once", min=1),
    "wave": Int(0, "the dependency wave `jobs` prints", min=0),
    "all": Bool(False, "`jobs` lists current stages too"),
    "check": Bool(False, "`dag` only checks dvc.yaml"),
}
TRAINS = ("train", "run", "check-regression", "update-reference")  # verbs that may train
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
        if not sep and verb == "list" and item in ARGS["what"].options():  # `list params`
            key, sep, value = "what", "=", item
        if not sep or not key:
            raise UserError(f"expected key=value, got {item!r}")
        if key in required or key in optional:
            args[key] = value if isinstance(ARGS[key], (Str, Choice)) else config.parse_value(key, value)
            ARGS[key].check(key, args[key])
        else:
            overrides[key] = value
    missing = [r for r in required if r not in args]
    if missing:
        raise UserError(f"`{verb}` needs {', '.join(f'{m}=…' for m in missing)}")
    return verb, args, overrides


def main(argv: list[str] | None = None) -> int:
    verb = "?"
    try:
        verb, args, overrides = parse(sys.argv[1:] if argv is None else argv)
        _single_process_unless_training(verb)
        params = config.load_params(overrides)
        lazy = verb == "run" and not overrides  # the models are built once a stage is to run
        preflight(verb, args, params, build=not lazy)
        if verb in ("check-regression", "update-reference"):
            return regression_verb(verb, args["rerun"], params, overrides)
        if verb == "run":
            build = (lambda: build_methods(verb, args, params)) if lazy else None
            return run_verb(args, params, overrides, check=build)
        return dispatch(verb, args, params)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a full disk is the machine's state, not a bug: one line, then rerun
        full = disk_full(exc)
        if full is None:
            raise
        where = f" writing {full.filename}" if getattr(full, "filename", None) else ""
        print(f"error: no space left on the device{where} during `{verb}`; free some space and run the "
              f"same command again: it resumes from what was finished", file=sys.stderr)
        return 2


def disk_full(exc: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT error in ``exc``'s chain (raised or wrapped), else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and (exc.errno in (errno.ENOSPC, errno.EDQUOT)
                                         or "No space left on device" in str(exc)):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def preflight(verb: str, args: dict, params: dict, build: bool = True) -> None:
    """Everything ``verb`` will read, checked before any stage starts (module docstring): the
    params values, the protocols, train sets and dataset they name and each method's options;
    then (unless ``build`` is false: ``build_methods`` later) every method built."""
    from benchmark.schema import methods as method_schema
    schema.validate(params)
    if verb in pipeline.STAGE_FUNCTIONS:  # before torch's first operation (dry_build below builds models)
        from benchmark.engine import device
        device.set_numerics(params["numerics"])
    protos = [config.load_protocol(p) for p in _protocols(verb, args, params)]
    for proto in protos:
        schema.check_protocol(proto, params)
    train_sets = [ts for proto in protos for ts in pipeline.protocol_train_sets(proto)]
    train_sets += [args["train_set"]] if verb == "train" else [params["plots"]["train_set"]] if verb == "plots" else []
    for ts in train_sets:
        pipeline.parse_train_set(ts, params)
    if "dataset" in args:
        pipeline.dataset_cfg(params, args["dataset"], check_root=False)
    for name in _methods(verb, args, params, protos):
        root, opts = pipeline.resolve_method(params, name)
        method_schema.check_options(name, registry.get(registry.METHODS, root), opts)
        pipeline.train_cfg(params, name)  # checks the entry's `train` keys too
    if build:
        build_methods(verb, args, params)


def build_methods(verb: str, args: dict, params: dict) -> None:
    """Every method ``verb`` builds, built on the meta device with its resolved options: what its
    constructor refuses, the crop side it cannot take and, where the verb trains, each training
    stage's optimiser and schedulers, as one line."""
    from benchmark.schema import methods as method_schema
    trains = verb in TRAINS and (verb not in ("check-regression", "update-reference") or args["rerun"])
    if trains:  # the engine (mmengine's Runner, sklearn) is imported only by a verb that trains
        from benchmark.engine import optim
    protos = [config.load_protocol(p) for p in _protocols(verb, args, params)]
    for name in _methods(verb, args, params, protos):
        root, opts = pipeline.resolve_method(params, name)
        method = method_schema.dry_build(name, registry.get(registry.METHODS, root), opts)
        method_schema.check_input_size(name, method, params["extract"]["size"])
        cfg = pipeline.train_cfg(params, name)
        for stage, epochs in method.training_stages(cfg["epochs"]) if trains else ():
            recipe = optim.stage_recipe(method, stage, {**cfg, "epochs": epochs})
            optim.check_recipe(recipe, f"methods.{name}, training stage {stage} (train.recipe: "
                                       f"{params['train']['recipe']})")


def _protocols(verb: str, args: dict, params: dict) -> list[str]:
    if args.get("protocol") is not None:
        return [args["protocol"]]
    if verb in ("report", "run", "jobs") or args.get("rerun"):
        return list(params["grid"]["protocols"])
    return []


def _methods(verb: str, args: dict, params: dict, protos: list[dict]) -> list[str]:
    """The methods entries ``verb`` builds (run: the named one, else the protocol's, else the grid's)."""
    if verb in ("train", "evaluate", "analyze") or args.get("method"):
        return [args["method"]]
    if verb == "run" or args.get("rerun"):
        names = [m for proto in protos for m in pipeline.protocol_methods(proto) or params["grid"]["methods"]]
        return list(dict.fromkeys(names))
    return list(params["grid"]["methods"]) if verb in ("plots", "cost") else []


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
    from benchmark.pipeline import dvcfile
    if verb == "list":
        print_params(params) if args["what"] == "params" else print_choices(params)
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


def run_verb(args: dict, params: dict, overrides: dict, check=None) -> int:
    """``run``: the grid (or one protocol's stages) through DVC's DAG; with overrides, in its own
    workspace. ``check`` runs before the first stage starts (not at all when none is to run)."""
    jobs = args["jobs"] if args["jobs"] is not None else params["grid"]["jobs"]
    pipeline.run(params, args["protocol"], args["method"], jobs=jobs, threads=params["grid"]["threads"],
                 overrides=overrides, check=check)
    return 0


def regression_verb(verb: str, rerun: bool, params: dict, overrides: dict) -> int:
    """With ``rerun``, the grid first (with overrides such as ``profile=ci``: in its own workspace,
    whose metrics are then read), then the check or the rewrite of the reference."""
    from pathlib import Path

    from benchmark.evaluation import regression
    from benchmark.pipeline.provenance import git_commit
    metrics_csv = Path("results/metrics.csv")
    if verb == "check-regression" and rerun:
        regression.check_comparable(params, overrides.get("profile"))  # before the grid runs, not after
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
    print("params:             python -m benchmark list params")


def print_params(params: dict | None = None) -> None:
    """Every params key: name = default, what is allowed, what it does (``benchmark.schema``)."""
    for key, allowed, default, doc in schema.describe(params):
        print(f"{key} = {default}\n    {allowed}; {doc}")
