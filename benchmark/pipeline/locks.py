"""File locks (``fcntl.flock``) under ``.benchmark/locks/``, so concurrent commands in one
checkout never interleave their writes.

* ``stage_lock(name)``: held while a stage verb runs; a second process running the same stage
  (two SLURM tasks, two terminals) waits for the first and then does its own, complete run.
* ``run_lock()``: held by ``run`` for its whole duration; a second ``run`` in the same checkout
  refuses at once with one line (DVC's own repository lock guards ``dvc repro`` the same way).

The kernel drops a lock when its holder dies, so a killed run never leaves one behind.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from benchmark.errors import UserError

LOCKS = Path(".benchmark/locks")


@contextlib.contextmanager
def _flock(path: Path, blocking: bool):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise UserError(f"another `run` ({holder}) is running in this checkout ({path}); wait for it to "
                            f"finish, or run this one in another clone") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


def stage_lock(name: str):
    return _flock(LOCKS / f"{name.replace('/', '_')}.lock", blocking=True)


def run_lock():
    return _flock(LOCKS / "run.lock", blocking=False)
