"""A rerun with nothing changed, at the default grid's size: every stage of dvc.yaml, on tiny data.

    python benchmarks/noop_rerun.py [--out DIR] [--jobs 2] [--repeat 3]

Clones this repository (its last commit, as a user's fresh clone) into ``--out``, bakes the
``tiny`` profile into params.yaml (every stage's work is seconds; the grid -- protocols,
methods, seeds, datasets, distortions -- stays the default's), regenerates dvc.yaml, runs the
whole grid once with ``python -m benchmark run jobs=N`` and commits, then times what a user pays
to learn that nothing needs to run. Prints ``key=value`` lines: the stage count, the size of
dvc.lock, the first run's wall and CPU time, and the wall and CPU time (of the commands'
processes) of ``dvc status``, ``dvc repro`` and ``python -m benchmark run`` with nothing changed
(best of ``--repeat``).

The data are tiny, so a stage's hashes cover fewer files than at the default size; DVC skips
rehashing unchanged files by their inode and mtime, so what grows with the grid is the number of
stages and the lock's size, which are the default's here.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmark import config  # noqa: E402


def sh(cmd: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """(wall, CPU of the command and its children) seconds of running ``cmd``."""
    t, c = time.perf_counter(), _children_cpu()
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return time.perf_counter() - t, _children_cpu() - c


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="where the clone goes (default: a temp dir)")
    ap.add_argument("--jobs", type=int, default=2, help="stages the first run runs at once")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    proj = (a.out or Path(tempfile.mkdtemp(prefix="noop_rerun_"))) / "project"
    shutil.rmtree(proj, ignore_errors=True)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(proj), "OMP_NUM_THREADS": "1",
           "PATH": f"{bin_dir}:{os.environ['PATH']}", "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
    subprocess.run(["git", "clone", "-q", str(REPO), str(proj)], check=True)
    shared = REPO.parent / "shared"
    if shared.is_dir():                      # the design docs beside the repository, as in CI
        (proj.parent / "shared").symlink_to(shared)
    params = config.load_params({"profile": "tiny"}, root=proj)
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    py, dvc = [sys.executable, "-m", "benchmark"], [str(bin_dir / "dvc")]
    sh(py + ["dag"], proj, env)
    sh(["git", "commit", "-qam", "tiny profile"], proj, env)
    names = subprocess.run(dvc + ["stage", "list", "--name-only"], cwd=proj, env=env, capture_output=True,
                           text=True, check=True).stdout.split()
    print(f"stages={len(names)}", flush=True)
    wall, cpu = sh(py + ["run", f"jobs={a.jobs}"], proj, env)
    print(f"first_run_wall_s={wall:.1f}\nfirst_run_cpu_s={cpu:.1f}", flush=True)
    sh(["git", "add", "-A"], proj, env)
    sh(["git", "commit", "-qm", "tiny grid"], proj, env)
    lock = proj / "dvc.lock"
    print(f"dvc_lock_bytes={lock.stat().st_size}", flush=True)
    print(f"dvc_lock_stages={len(yaml.safe_load(lock.read_text())['stages'])}", flush=True)
    for label, cmd in (("dvc_status", dvc + ["status"]), ("dvc_repro", dvc + ["repro"]), ("run", py + ["run"])):
        wall, cpu = min(sh(cmd, proj, env) for _ in range(a.repeat))
        print(f"noop_{label}_wall_s={wall:.2f}\nnoop_{label}_cpu_s={cpu:.2f}", flush=True)
    status = subprocess.run(dvc + ["status", "--json"], cwd=proj, env=env, capture_output=True, text=True)
    print(f"stale_after={len(json.loads(status.stdout or '{}'))}")


if __name__ == "__main__":
    main()
