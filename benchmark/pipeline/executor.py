"""``run``: the grid's stages (or one protocol's) through DVC's DAG, several at a time.

DVC decides what is stale (``dvc status`` on the stages of ``dvc.yaml``, which is rendered from
``pipeline.graph``); each stale stage's command -- the one ``dvc repro`` would run -- runs in
its own process, ``jobs`` at a time in dependency order, and is recorded with ``dvc commit``
as soon as it finishes (a stage whose run DVC has cached is restored instead). So after
``run`` ``dvc repro`` finds nothing to do, and the other way round. ``dvc repro`` runs one
stage at a time; on 2 cores ``run`` with ``jobs=2`` runs two single-threaded stages at once.

``run`` with params overrides (``train.epochs=2``, ``profile=paper``) never writes over the
pipeline's outputs: it becomes a DVC experiment (``dvc exp run --temp``, its own workspace),
named by its settings and code, and prints how it differs from the workspace. Switching back is
free (the workspace never changed); an experiment already run with the same settings and code
is not run again.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from benchmark.errors import UserError
from benchmark.pipeline import dvcfile, graph, locks

LOGS = Path(".benchmark/logs")


def select(insts: list[graph.Instance], protocol: str | None, method: str | None) -> set[str]:
    """The instances ``run protocol=P [method=M]`` targets (all when no protocol)."""
    if protocol is None and method is None:
        return {i.name for i in insts}
    picked = {i.name for i in insts if i.stage.verb in ("evaluate", "analyze")
              and (protocol is None or i.stage.meta.get("protocol") == protocol)
              and (method is None or i.stage.meta.get("method") == method)}
    evals = {i.stage.meta.get("method") for i in insts if i.stage.verb == "evaluate"
             and (protocol is None or i.stage.meta.get("protocol") == protocol)}
    if method is not None and not any(i.name in picked and i.stage.verb == "evaluate" for i in insts):
        picked = set()
    if not picked:
        where = f"protocol {protocol!r}" if protocol else "the grid"
        if protocol is not None and not evals:
            raise UserError(f"{where} is not in grid.protocols (params.yaml); add it there and run "
                            f"`python -m benchmark dag`")
        raise UserError(f"method {method!r} has no stages in {where}; its methods are: {', '.join(sorted(evals))}")
    return picked


def _repo():
    if not Path(".dvc").is_dir():
        raise UserError(f"no DVC project in {Path.cwd()}: run `git init && dvc init` here first (README: Pipeline)")
    from dvc.repo import Repo
    return Repo()


def _stale(repo, names: list[str]) -> set[str]:
    from dvc.exceptions import DvcException
    try:
        return set(repo.status(targets=names, with_deps=True))
    except DvcException as exc:
        raise UserError(f"dvc status failed: {str(exc).splitlines()[0]}") from None


def run(params: dict, protocol: str | None = None, method: str | None = None, jobs: int = 1,
        threads: int = 1, overrides: dict | None = None) -> list[str]:
    if overrides:
        return experiment(params, protocol, method, overrides)
    with locks.run_lock():
        dvcfile.check(params)
        insts = graph.instances(params)
        targets = select(insts, protocol, method)
        repo = _repo()
        try:
            wanted = graph.with_upstream(insts, targets)
            ran = _execute(repo, [i for w in graph.waves(insts, wanted) for i in w], jobs, threads)
            if protocol is not None or method is not None:  # metrics over the scores that exist now
                ran += _execute(repo, _metrics(insts, targets), jobs, threads)
                ran += _report(repo, params, insts, protocol, threads)
        finally:
            repo.close()
    return ran


def _metrics(insts: list[graph.Instance], targets: set[str]) -> list[graph.Instance]:
    """The ``metrics-<P>`` stages of the protocols the targets belong to."""
    protocols = {i.stage.meta.get("protocol") for i in insts if i.name in targets}
    return [i for i in insts if i.stage.verb == "metrics" and i.stage.meta["protocol"] in protocols]


def _report(repo, params: dict, insts: list[graph.Instance], protocol: str | None, threads: int) -> list[str]:
    """The grid's report once every input it reads exists; until then the protocol's own page."""
    from benchmark.pipeline import reporting
    report = [i for i in insts if i.stage.verb == "report"]
    missing = [d for d in report[0].deps if not Path(d).exists()]
    if not missing:
        return _execute(repo, report, 1, threads)
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


def _execute(repo, todo: list[graph.Instance], jobs: int, threads: int) -> list[str]:
    """Run the stale ones among ``todo`` (topologically ordered), ``jobs`` at a time."""
    from dvc.stage.cache import RunCacheNotFoundError
    up = graph.upstream(todo)
    names = {i.name for i in todo}
    stale = _stale(repo, sorted(names))
    done, running, ran, failed = set(), {}, [], None
    pending = list(todo)
    LOGS.mkdir(parents=True, exist_ok=True)
    while pending or running:
        ready = [i for i in pending if all(u in done or u not in names for u in up[i.name])] if failed is None else []
        for inst in ready:
            if len(running) >= max(1, jobs):
                break
            pending.remove(inst)
            if inst.name not in stale and not repo.status(targets=[inst.name]):
                print(f"[skip] {inst.name}: up to date", flush=True)
                done.add(inst.name)
                continue
            stage = _dvc_stage(repo, inst.name)
            stage.remove_outs(ignore_remove=False, force=False)
            try:
                repo.stage_cache.restore(stage)
                repo.commit(inst.name, force=True)
                print(f"[done] {inst.name}: restored from DVC's run cache", flush=True)
                done.add(inst.name)
                continue
            except RunCacheNotFoundError:
                pass
            print(f"[run]  {inst.name}", flush=True)
            log = open(LOGS / f"{inst.name}.log", "w")
            argv = [sys.executable, *inst.argv[1:]]  # "python -m benchmark …" with this interpreter
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=_env(threads))
            running[proc.pid] = (inst, proc, log, time.perf_counter())
        if not running:
            if pending and failed is None and not ready:
                raise UserError(f"stages {', '.join(i.name for i in pending)} wait on stages outside the run")
            break
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        inst, proc, log, start = running.pop(pid)
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.close()
        cpu = usage.ru_utime + usage.ru_stime
        with open(LOGS / "times.tsv", "a") as fh:
            fh.write(f"{inst.name}\t{time.perf_counter() - start:.1f}\t{usage.ru_utime:.1f}\t{usage.ru_stime:.1f}\n")
        if proc.returncode != 0:
            failed = failed or (inst, proc.returncode)
            print(f"[fail] {inst.name}: exit {proc.returncode} (log: {LOGS / (inst.name + '.log')})", flush=True)
            continue
        repo.commit(inst.name, force=True)
        print(f"[done] {inst.name}: {time.perf_counter() - start:.1f} s wall, {cpu:.1f} s CPU", flush=True)
        done.add(inst.name)
        ran.append(inst.name)
    if failed is not None:
        inst, code = failed
        raise UserError(f"stage {inst.name} failed (exit {code}): {_last_error(LOGS / (inst.name + '.log'))}")
    return ran


def _dvc_stage(repo, name: str):
    for stage in repo.index.stages:
        if stage.addressing == name:
            return stage
    raise UserError(f"dvc.yaml has no stage {name}; run `python -m benchmark dag`")


def _last_error(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")] or lines[-1:]
    return (errors[-1] if errors else "no output") + f" (full log: {log})"


# ---------------------------------------------------------------- experiments
def experiment_name(protocol: str | None, method: str | None, overrides: dict) -> str:
    """Named by its settings and the code it runs (HEAD and any uncommitted change)."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    diff = subprocess.run(["git", "diff", "HEAD"], capture_output=True, text=True).stdout
    settings = "_".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    digest = hashlib.sha256("\n".join([head, diff, settings, str(protocol), str(method)]).encode()).hexdigest()[:8]
    slug = re.sub(r"[^A-Za-z0-9._=-]+", "_", "-".join(x for x in (protocol, method, settings) if x))[:60]
    return f"{slug.strip('_.-')}-{digest}"


def _expanded(overrides: dict) -> list[str]:
    """``key=value`` for DVC's ``-S``, a profile's overrides spelled out (its keys first)."""
    import yaml

    from benchmark import config
    out = dict(overrides)
    profile = out.pop("profile", None)
    spelled = {}
    if profile is not None:
        spelled = {k: yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()
                   for k, v in config.read_yaml(Path("profiles") / f"{profile}.yaml").items()}
    return [f"{k}={v}" for k, v in {**spelled, **out}.items()]


def experiment(params: dict, protocol: str | None, method: str | None, overrides: dict) -> list[str]:
    """The overridden run as a DVC experiment in its own temporary workspace."""
    from benchmark import config
    base = config.load_params()
    if dvcfile.render(params) != dvcfile.render(base):
        raise UserError("these overrides change the grid's stages (its protocols, methods, datasets or distortions); "
                        "edit params.yaml, run `python -m benchmark dag`, and run again")
    insts = graph.instances(params)
    picked = select(insts, protocol, method) if protocol or method else set()
    targets = sorted(picked | {i.name for i in _metrics(insts, picked)})
    name = experiment_name(protocol, method, overrides)
    dvc = [sys.executable, "-m", "dvc"]
    listed = subprocess.run([*dvc, "exp", "list", "--name-only"], capture_output=True, text=True)
    if name in listed.stdout.split():
        print(f"[skip] experiment {name}: already run with these settings and this code", flush=True)
    else:
        with locks.run_lock():
            cmd = [*dvc, "exp", "run", "--temp", "-n", name, *(a for o in _expanded(overrides) for a in ("-S", o)),
                   *targets]
            print(f"[run]  experiment {name}: {' '.join(cmd[2:])}", flush=True)
            if subprocess.run(cmd, env=_env(1)).returncode != 0:
                raise UserError(f"experiment {name} failed; see the output above")
    subprocess.run([*dvc, "exp", "diff", "HEAD", name])
    print(f"experiment {name}: `dvc exp show` compares it; `dvc exp apply {name}` puts its results in the workspace")
    return [name]


# ---------------------------------------------------------------- jobs for a cluster
def job_lines(params: dict, protocol: str | None = None, method: str | None = None, wave: int | None = None,
              everything: bool = False) -> list[str]:
    """The stages to run as shell commands in dependency waves: every command of a wave can run
    at once (a SLURM array, one GPU per task); a wave starts when the previous one has finished.
    Only the stages DVC reports stale unless ``everything`` (or outside a DVC project). With
    ``wave=N`` just that wave's commands, one per line."""
    dvcfile.check(params)
    insts = graph.instances(params)
    wanted = graph.with_upstream(insts, select(insts, protocol, method))
    if not everything and Path(".dvc").is_dir():
        repo = _repo()
        try:
            wanted &= _stale(repo, sorted(wanted))
        finally:
            repo.close()
    waves = graph.waves(insts, wanted)
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


def experiment_file(name: str, path: str) -> bytes:
    """The bytes of ``path`` (a DVC output or a git-tracked file) in experiment ``name``."""
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps/"], capture_output=True,
                          text=True).stdout.split()
    ref = next((r for r in refs if r.rsplit("/", 1)[-1] == name), None)
    if ref is None:
        raise UserError(f"no experiment named {name}; `dvc exp list` shows them")
    import dvc.api
    return dvc.api.read(path, rev=ref, mode="rb")
