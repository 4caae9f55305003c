"""A stage's fingerprint, from the one declaration (``pipeline.graph``): its command, the values
of the params keys it reads, the bytes of the code and input files it reads, and the
fingerprints of the stages that produce its other inputs. The engine resumes a training only
from a work dir with the same fingerprint (``engine.train``); what is stale is DVC's call."""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from benchmark import config
from benchmark.pipeline import dag, graph

CODE_DIRS = ("benchmark/", "methods/")


def stage_key(verb: str, params: dict, **args) -> str:
    insts = dag.instances(params)
    seed = args.get("seed")
    want = {k: str(v) for k, v in args.items()}
    for inst in insts:
        if inst.stage.verb == verb and {k: _arg(v, inst.seed) for k, v in inst.stage.args.items()} == want:
            return _key(inst, insts, params, dag.producers(insts))
    extra = _ad_hoc(verb, params, args)  # a command outside the grid (`train method=X` by hand)
    inst = dag.instances({**params, "grid": {**params["grid"], "seeds": [seed]}}, [extra])[0]
    return _key(inst, insts + [inst], params, dag.producers(insts + [inst]))


def _arg(value, seed) -> str:
    return str(value).replace(graph.SEED, str(seed))


def _ad_hoc(verb: str, params: dict, args: dict) -> graph.Stage:
    if verb == "train":
        return graph.train_stage(params, args["method"], args["train_set"], args.get("reuse"))
    if verb == "evaluate":
        return graph.evaluate_stage(params, args["protocol"], args["method"])
    raise KeyError(f"no {verb} stage with {args} in the grid")


def _key(inst, insts, params: dict, find, memo: dict | None = None) -> str:
    memo = {} if memo is None else memo
    if inst.name in memo:
        return memo[inst.name]
    by_name = {i.name: i for i in insts}
    h = hashlib.sha256(json.dumps([inst.name, inst.cmd], sort_keys=True).encode())
    for key in inst.stage.params:
        h.update(json.dumps([key, config.subtree(params, key)], sort_keys=True, default=str).encode())
    for dep in inst.deps:
        ups = sorted(find(dep) - {inst.name})
        if ups:
            for up in ups:
                h.update(_key(by_name[up], insts, params, find, memo).encode())
        else:
            h.update(dep.encode() + _content(dep))
    memo[inst.name] = h.hexdigest()[:16]
    return memo[inst.name]


@functools.lru_cache(maxsize=None)
def _content(path: str) -> bytes:
    """Bytes of a code file or directory (``__pycache__`` skipped) or of a small input file; a
    data directory nobody produces (a downloaded dataset) counts by its path only."""
    p = Path(path)
    if p.is_file():
        return p.read_bytes()
    if p.is_dir() and path.startswith(CODE_DIRS):
        return b"".join(f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file() and "__pycache__" not in f.parts)
    return b""
