"""``run``: the grid's stages (or one protocol's) through DVC's DAG, several at a time.

DVC decides what is stale (``dvc status`` on the stages of ``dvc.yaml``, which is rendered from
``pipeline.graph``); each stale stage's command -- the one ``dvc repro`` would run -- runs in
its own process, ``jobs`` at a time in dependency order, and is recorded with ``dvc commit``
as soon as it finishes (a stage whose run DVC has cached is restored instead). So after
``run`` ``dvc repro`` finds nothing to do, and the other way round. ``dvc repro`` runs one
stage at a time; on 2 cores ``run`` with ``jobs=2`` runs two single-threaded stages at once.

``run`` with params overrides (``train.epochs=2``, ``profile=paper``, ``grid.methods=[…]``) never
writes over the pipeline's outputs: it runs in its own workspace ``.benchmark/workspaces/<name>/``,
named by its settings and a digest of them and of the code, which shares this project's DVC
cache (what the overrides leave unchanged is restored from DVC's run cache). Switching back is
free (the pipeline's outputs never changed); a workspace already run with the same settings and
code is not run again. ``dvc exp run -S …`` is the other way to try a value (``dvc exp show``).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmark.errors import UserError
from benchmark.pipeline import dag, dvcfile, locks

LOGS = Path(".benchmark/logs")
TIMES = LOGS / "times.tsv"  # one line per finished stage: name, wall, user, sys seconds


def logged_times(root: Path = Path(".")) -> dict[str, tuple[float, float]]:
    """{stage: (wall, CPU seconds)} from a project's ``TIMES``, the last line of each stage."""
    out, path = {}, Path(root) / TIMES
    if path.is_file():
        for line in path.read_text().splitlines():
            name, wall, user, system = line.split("\t")
            out[name] = (float(wall), float(user) + float(system))
    return out


def select(insts: list[dag.Instance], protocol: str | None, method: str | None) -> set[str]:
    """The instances ``run protocol=P [method=M]`` targets (all when no protocol)."""
    if protocol is None and method is None:
        return {i.name for i in insts}
    def serves(i) -> bool:  # an evaluate stage also scores the protocols that share its scores
        return protocol is None or protocol in i.stage.meta.get("protocols", [i.stage.meta.get("protocol")])
    picked = {i.name for i in insts if i.stage.verb in ("evaluate", "analyze") and serves(i)
              and (method is None or i.stage.meta.get("method") == method)}
    evals = {i.stage.meta.get("method") for i in insts if i.stage.verb == "evaluate" and serves(i)}
    if method is not None and not any(i.name in picked and i.stage.verb == "evaluate" for i in insts):
        picked = set()
    if not picked:
        where = f"protocol {protocol!r}" if protocol else "the grid"
        if protocol is not None and not evals:
            raise UserError(f"{where} is not in grid.protocols (params.yaml); add it there and run "
                            f"`python -m benchmark dag`")
        raise UserError(f"method {method!r} has no stages in {where}; its methods are: {', '.join(sorted(evals))}")
    return picked


def _require_project() -> None:
    if not Path(".dvc").is_dir():
        raise UserError(f"no DVC project in {Path.cwd()}: run `git init && dvc init` here first (README: Pipeline)")


def _repo():
    _require_project()
    from dvc.repo import Repo
    return Repo()


def _stale(repo, names) -> set[str]:
    """The stages among ``names`` that ``dvc status`` calls stale (a dep, an out, the command or a
    param changed), with dvc.yaml, dvc.lock and each params file parsed once for all of them:
    ``repo.status(targets=…)`` parses dvc.yaml and dvc.lock again for every target (94 s of a
    no-op rerun of the default grid), and a path or a params key shared by many stages is hashed
    or read once (``_once``)."""
    from dvc.exceptions import DvcException
    from dvc.repo import lock_repo
    try:
        with lock_repo(repo), _once():
            stages = {s.addressing: s for s in repo.index.stages}
            return {n for n in names if stages[n].status(check_updates=True)}
    except DvcException as exc:
        raise UserError(f"dvc status failed: {str(exc).splitlines()[0]}") from None


@contextmanager
def _once():
    """While DVC computes a status (nothing writes the workspace then), each path's hash and each
    params file's keys are computed once for all the stages that read them: the default grid's 186
    stages have 4,902 deps on 350 paths (every stage reads ``benchmark/io.py``) and 96 distinct
    sets of params keys. The answers are DVC's own functions', memoised by their arguments."""
    from dvc.dependency import param
    from dvc.output import Output
    memo: dict = {}

    def once(fn, key):
        def memoised(*args, **kwargs):
            k = (fn, key(*args, **kwargs))
            if k not in memo:
                memo[k] = fn(*args, **kwargs)
            return memo[k]
        return memoised
    keys = ((Output, "_get_hash_meta", lambda out: (out.fs_path, out.hash_name, out.use_cache, out.fs.protocol)),
            (param, "read_param_file", lambda fs, path, key_paths=None, flatten=False, **kw:
             (path, tuple(key_paths or ()), flatten, tuple(sorted(kw.items())))),
            (param, "load_path", lambda path, fs, **kw: (path, tuple(sorted(kw.items())))))
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in keys]
    for owner, name, key in keys:
        setattr(owner, name, once(getattr(owner, name), key))
    try:
        yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def run(params: dict, protocol: str | None = None, method: str | None = None, jobs: int = 1,
        threads: int = 1, overrides: dict | None = None, check=None) -> list[str]:
    """The stale stages among the targets' (module docstring). ``check`` (the CLI's build of the
    methods the stages run) is called before the first one starts, or before refusing because
    dvc.yaml or the DVC project is not there, and not at all when nothing is stale."""
    if overrides:
        return experiment(params, protocol, method, overrides)
    try:
        dvcfile.check(params)
        _require_project()
    except UserError:
        if check is not None:
            check()  # a value a method refuses is named first: it is what to fix first
        raise
    with locks.run_lock():
        repo = _repo()
        try:
            insts = dag.instances(params)
            targets = select(insts, protocol, method)
            partial = protocol is not None or method is not None
            todo = [i for w in dag.waves(insts, dag.with_upstream(insts, targets)) for i in w]
            if partial:  # then the metrics over the scores that exist now
                queued = {i.name for i in todo}
                todo += [i for i in _metrics(insts, targets) if i.name not in queued]
            state = _State.read(repo, insts, check)
            ran = _execute(state, todo, jobs, threads)
            if partial:
                ran += _report(state, params, insts, protocol, threads)
        finally:
            repo.close()
    return ran


@dataclass
class _State:
    """One ``run``: DVC's status of every stage, read once at the start (dvc.yaml and dvc.lock
    take seconds to parse), and the stages this run has made since."""
    repo: object
    up: dict[str, list[str]]   # {stage: the stages whose outputs it reads}
    stale: set[str]
    changed: set[str]
    check: object = None       # called once, before the first stage is restored or run

    @classmethod
    def read(cls, repo, insts: list[dag.Instance], check=None) -> _State:
        return cls(repo, dag.upstream(insts), _stale(repo, [i.name for i in insts]), set(), check)

    def before_work(self) -> None:
        if self.check is not None:
            check, self.check = self.check, None
            check()


def _metrics(insts: list[dag.Instance], targets: set[str]) -> list[dag.Instance]:
    """The ``metrics-<P>`` stages of the protocols the targets belong to."""
    protocols = {p for i in insts if i.name in targets
                 for p in i.stage.meta.get("protocols", [i.stage.meta.get("protocol")])}
    return [i for i in insts if i.stage.verb == "metrics" and i.stage.meta["protocol"] in protocols]


def _report(state: _State, params: dict, insts: list[dag.Instance], protocol: str | None, threads: int) -> list[str]:
    """The grid's report once every input it reads exists; until then the protocol's own page."""
    from benchmark.pipeline import reporting
    report = [i for i in insts if i.stage.verb == "report"]
    missing = [d for d in report[0].deps if not Path(d).exists()]
    if not missing:
        return _execute(state, report, 1, threads)
    protocols = [protocol] if protocol else sorted({i.stage.meta["protocol"] for i in insts if i.stage.verb == "metrics"
                                                    and Path(i.outs[0]).is_file()})
    out = reporting.RESULTS / "protocols" / "-".join(protocols)
    page = next(p for p in reporting.write(params, protocols, out_dir=out) if p.name == "report.html")
    print(f"[skip] report: the grid's page needs every protocol ({missing[0]} and {len(missing) - 1} more are "
          f"missing; `python -m benchmark run` makes them); this protocol's page: {page}", flush=True)
    return []


def _env(threads: int) -> dict:
    n = str(int(threads))
    return {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "BENCHMARK_THREADS": n}


def _execute(state: _State, todo: list[dag.Instance], jobs: int, threads: int) -> list[str]:
    """Run the stale ones among ``todo`` (topologically ordered), ``jobs`` at a time."""
    repo, up, stale, changed = state.repo, state.up, state.stale, state.changed
    names = {i.name for i in todo}
    done, running, ran, failed = set(), {}, [], None
    pending = list(todo)
    LOGS.mkdir(parents=True, exist_ok=True)
    while pending or running:
        progressed = True
        while progressed and failed is None and len(running) < max(1, jobs):
            progressed = False
            for inst in [i for i in pending if all(u in done or u not in names for u in up[i.name])]:
                if len(running) >= max(1, jobs):
                    break
                pending.remove(inst)
                progressed = True
                # a stage DVC found current stays so unless something it reads was remade in this run
                if inst.name not in stale and not (set(up[inst.name]) & changed and _stale(repo, [inst.name])):
                    print(f"[skip] {inst.name}: up to date", flush=True)
                    done.add(inst.name)
                    continue
                state.before_work()
                if _restore(repo, inst):
                    print(f"[done] {inst.name}: restored from DVC's run cache", flush=True)
                    done.add(inst.name)
                    changed.add(inst.name)
                else:
                    running.update(_start(inst, threads))
        if not running:
            if pending and failed is None:
                raise UserError(f"stages {', '.join(i.name for i in pending)} wait on stages outside the run")
            break
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        inst, log, start, proc = running.pop(pid)
        code = proc.returncode = os.waitstatus_to_exitcode(status)
        log.close()
        wall, cpu = time.perf_counter() - start, usage.ru_utime + usage.ru_stime
        with open(TIMES, "a") as fh:
            fh.write(f"{inst.name}\t{wall:.1f}\t{usage.ru_utime:.1f}\t{usage.ru_stime:.1f}\n")
        if code != 0:
            failed = failed or (inst, code)
            print(f"[fail] {inst.name}: exit {code} (log: {LOGS / (inst.name + '.log')})", flush=True)
            continue
        if _has_deps(inst):  # a partial run (deps missing) stays stale for DVC: nothing to record
            repo.commit(inst.name, force=True)
        print(f"[done] {inst.name}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
        done.add(inst.name)
        changed.add(inst.name)
        ran.append(inst.name)
    if failed is not None:
        inst, code = failed
        raise UserError(f"stage {inst.name} failed (exit {code}): {_last_error(LOGS / (inst.name + '.log'))}")
    return ran


def _has_deps(inst: dag.Instance) -> bool:
    """Every dep exists (a protocol's metrics after a one-method run read only the scores there are)."""
    return all(Path(d).exists() for d in inst.deps)


def _restore(repo, inst: dag.Instance) -> bool:
    """Empty the stage's outputs as ``dvc repro`` would; restore them from DVC's run cache when it
    has run with these deps and params before (then record it). A stage with a dep missing (a
    protocol's metrics over the scores one method's run made) has no run-cache entry to hit."""
    from dvc.repo import lock_repo
    from dvc.stage.cache import RunCacheNotFoundError
    if not _has_deps(inst):
        return False
    name = inst.name
    with lock_repo(repo):
        stage = _dvc_stage(repo, name)
        stage.remove_outs(ignore_remove=False, force=False)
        try:
            repo.stage_cache.restore(stage)
        except RunCacheNotFoundError:
            return False
        repo.commit(name, force=True)
    return True


def _start(inst: dag.Instance, threads: int) -> dict:
    print(f"[run]  {inst.name}", flush=True)
    log = open(LOGS / f"{inst.name}.log", "w")
    argv = [sys.executable, *inst.argv[1:]]  # "python -m benchmark …" with this interpreter
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=_env(threads))
    # the Popen object is kept until os.wait4 reaps the child: one dropped while the child runs goes to
    # subprocess's list of orphans, which the next Popen (DVC's git, ...) reaps -- lost to wait4
    return {proc.pid: (inst, log, time.perf_counter(), proc)}


def _dvc_stage(repo, name: str):
    for stage in repo.index.stages:
        if stage.addressing == name:
            return stage
    raise UserError(f"dvc.yaml has no stage {name}; run `python -m benchmark dag`")


def _last_error(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")] or lines[-1:]
    return (errors[-1] if errors else "no output") + f" (full log: {log})"


# ---------------------------------------------------------------- override runs
WORKSPACES = Path(".benchmark/workspaces")
PROJECT = ("benchmark", "methods", "protocols", "profiles", "results/paper", ".dvcignore", ".gitignore")


def workspace_name(protocol: str | None, method: str | None, overrides: dict) -> str:
    """Named by its settings and a digest of them and of the code it runs."""
    h = hashlib.sha256(json.dumps([protocol, method, sorted(overrides.items())]).encode())
    for top in PROJECT[:4] + ("params.yaml",):
        for f in sorted(Path(top).rglob("*")) if Path(top).is_dir() else [Path(top)]:
            if f.is_file() and "__pycache__" not in f.parts:
                h.update(str(f).encode() + f.read_bytes())
    settings = "_".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    slug = re.sub(r"[^A-Za-z0-9._=,-]+", "_", "-".join(x for x in (protocol, method, settings) if x))[:80]
    return f"{slug.strip('_.-')}-{h.hexdigest()[:8]}"


def experiment(params: dict, protocol: str | None, method: str | None, overrides: dict) -> list[str]:
    """The overridden run in its own workspace ``.benchmark/workspaces/<name>/``: a copy of the
    project with the overrides written into its params.yaml and its own dvc.yaml, sharing this
    project's DVC cache (so every stage the overrides leave unchanged is restored from DVC's run
    cache, not recomputed). The pipeline's outputs here are never touched."""
    import yaml
    name = workspace_name(protocol, method, overrides)
    ws = WORKSPACES / name
    done = ws / ".benchmark" / "done"
    if done.is_file():
        print(f"[skip] {ws}: already run with these settings and this code", flush=True)
    else:
        with locks.run_lock():
            _make_workspace(ws, params)
            argv = [sys.executable, "-m", "benchmark", "run", *(f"{k}={v}" for k, v in
                                                                 (("protocol", protocol), ("method", method)) if v)]
            print(f"[run]  {ws}: python -m benchmark run {' '.join(argv[4:])} with "
                  f"{' '.join(f'{k}={v}' for k, v in overrides.items())}", flush=True)
            if subprocess.run(argv, cwd=ws, env={**os.environ, "PYTHONPATH": str(ws.resolve())}).returncode != 0:
                raise UserError(f"the run in {ws} failed; see the output above")
            done.parent.mkdir(parents=True, exist_ok=True)
            done.write_text(yaml.safe_dump(overrides))
    report = next((p for p in (ws / "results/report.html", *sorted(ws.glob("results/protocols/*/report.html")))
                   if p.is_file()), None)
    print(f"results of {name}: {report or ws / 'results'}")
    return [str(ws)]


def _make_workspace(ws: Path, params: dict) -> None:
    import shutil

    import yaml

    from benchmark import io
    if ws.exists():
        shutil.rmtree(ws)  # an unfinished earlier attempt
    for item in PROJECT:
        src = Path(item)
        if src.is_dir():
            shutil.copytree(src, ws / item, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            (ws / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, ws / item)
    io.write_text(ws / "params.yaml", yaml.safe_dump(params, sort_keys=False))
    cwd = Path.cwd()
    try:
        os.chdir(ws)
        dvcfile.write(params)
    finally:
        os.chdir(cwd)
    dvc = [sys.executable, "-m", "dvc"]
    for cmd in (["init", "--no-scm", "-q"], ["config", "cache.dir", str((cwd / ".dvc/cache").resolve())],
                ["config", "cache.type", "hardlink,symlink,copy"], ["config", "core.analytics", "false"]):
        if subprocess.run([*dvc, *cmd], cwd=ws, capture_output=True, text=True).returncode != 0:
            raise UserError(f"could not set up the DVC workspace {ws} (dvc {' '.join(cmd)})")


# ---------------------------------------------------------------- jobs for a cluster
def job_lines(params: dict, protocol: str | None = None, method: str | None = None, wave: int | None = None,
              everything: bool = False) -> list[str]:
    """The stages to run as shell commands in dependency waves: every command of a wave can run
    at once (a SLURM array, one GPU per task); a wave starts when the previous one has finished.
    Only the stages DVC reports stale unless ``everything`` (or outside a DVC project). With
    ``wave=N`` just that wave's commands, one per line."""
    dvcfile.check(params)
    insts = dag.instances(params)
    wanted = dag.with_upstream(insts, select(insts, protocol, method))
    if not everything and Path(".dvc").is_dir():
        repo = _repo()
        try:
            wanted &= _stale(repo, wanted)
        finally:
            repo.close()
    waves = dag.waves(insts, wanted)
    if wave is not None:
        if not 1 <= wave <= max(len(waves), 1):
            raise UserError(f"wave={wave}: there are {len(waves)} waves (1..{len(waves)})")
        return [i.cmd for i in waves[wave - 1]] if waves else []
    lines = []
    for n, w in enumerate(waves, 1):
        lines.append(f"# wave {n} of {len(waves)}: {len(w)} job{'s' * (len(w) != 1)}")
        lines += [i.cmd for i in w]
    if waves:
        names = " ".join(i.name for w in waves for i in w)
        lines.append(f"# when every wave has finished, record the results for DVC: dvc commit -f {names}")
    return lines or ["# nothing to run: every stage is up to date"]


