"""Up-to-date checks for ``run``: a stage's key hashes the params keys and code it
reads (``STAGES``, which dvc.yaml mirrors; a test keeps them in step) and the keys
of the stages it depends on. Every stage function stamps its outputs with its key
when it finishes, whether DVC or ``run`` called it, so ``run`` skips what either made.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from benchmark import config, io

STAMPS = Path(".benchmark/stamps")
CODE = Path(__file__).resolve().parents[2]  # where benchmark/ and methods/ live

# stage -> (params keys it reads, code it runs); "{method}", "{dataset}" are filled per stage
STAGES = {
    "synthesize": (["synthff", "datasets.{dataset}"], ["benchmark/data/synthff.py", "benchmark/data/_synthff_draw.py", "benchmark/data/layout.py"]),
    "extract": (["extract", "datasets"], ["benchmark/data/extract.py", "benchmark/data/faces.py", "benchmark/data/layout.py",
                                          "benchmark/data/other_datasets.py", "benchmark/data/store.py"]),
    "indicators": (["indicators"], ["benchmark/indicators", "benchmark/data/store.py"]),
    "distort": (["distort"], ["benchmark/data/distortions.py", "benchmark/data/distorted_crops.py",
                              "benchmark/data/store.py"]),
    # methods/_*.py are the methods' shared parts (tests/test_cli.py keeps this list complete)
    "train": (["train", "methods.{method}"], ["benchmark/engine", "benchmark/method.py", "benchmark/backbones.py",
                                              "methods/{method}.py", "methods/_dpl_parts.py", "methods/_losses.py",
                                              "methods/_ppo.py", "methods/_recce_parts.py", "methods/_recipes.py",
                                              "methods/_srm_parts.py", "methods/_staged.py", "benchmark/data/frames.py",
                                              "benchmark/data/jpeg.py", "benchmark/data/store.py"]),
    "evaluate": (["evaluate", "indicators", "methods.{method}"], ["benchmark/evaluation/score.py",
                                                                  "benchmark/evaluation/conditions.py",
                                                                  "benchmark/data/jpeg.py", "benchmark/data/store.py",
                                                                  "benchmark/data/frames.py",
                                                                  "benchmark/evaluation/indicator_cache.py",
                                                                  "benchmark/engine/device.py",
                                                                  "benchmark/engine/loaders.py"]),
    "report": (["report", "grid", "metrics"], ["benchmark/evaluation/metrics.py", "benchmark/report",
                                               "benchmark/evaluation/stats.py", "benchmark/evaluation/compare.py"]),
}


def fingerprint(stage: str, params: dict, upstream: list[str] = (), code_args: dict | None = None, **args) -> str:
    """``code_args`` override ``args`` in the code paths only (a method variant's root file)."""
    keys, code = STAGES[stage]
    h = hashlib.sha256(json.dumps([stage, args, list(upstream)], sort_keys=True).encode())
    for key in keys:
        h.update(json.dumps(config.subtree(params, key.format(**args)), sort_keys=True, default=str).encode())
    for pattern in code:
        path = CODE / pattern.format(**{**args, **(code_args or {})})
        files = sorted(f for f in path.rglob("*") if f.is_file() and "__pycache__" not in f.parts) if path.is_dir() else [path]
        for f in files:
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def name(stage: str, args: dict) -> str:
    return "-".join([stage, *(str(v) for _, v in sorted(args.items()))])


def is_current(stage: str, args: dict, key: str, outputs: list[Path]) -> bool:
    stamp = STAMPS / f"{name(stage, args)}.json"
    try:
        recorded = json.loads(stamp.read_text()).get("key") if stamp.is_file() else None
    except (ValueError, AttributeError):  # a damaged stamp only means: run the stage again
        recorded = None
    return recorded == key and all(Path(p).exists() for p in outputs)


def write(stage: str, args: dict, key: str) -> None:
    io.write_json(STAMPS / f"{name(stage, args)}.json", {"key": key})
