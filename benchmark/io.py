"""Atomic writes: a reader never sees a half-written result, a failed stage leaves nothing.
Safe reads: a missing, truncated or foreign artefact is one ``UserError`` naming the file and
the stage that rewrites it (``read_table``, ``read_json``, ``load_tensors``).

Every write goes to a temporary sibling (``.<name>.<random>/``) and is renamed into place, so
a killed process leaves the previous file (or none), never a part of one. ``swap_dir`` puts a
finished directory in place of another the same way.
"""
from __future__ import annotations

import contextlib
import ctypes
import io as _io
import json
import os
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path

import pandas as pd
import torch

from benchmark.errors import UserError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary sibling path; on success it replaces ``path`` (file or directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / path.name
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            swap_dir(tmp, path)  # the old tree ends up at tmp, removed below
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def write_parquet(path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_csv(path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_tensors(path, obj) -> None:
    """Save a checkpoint of tensors and plain types only, so it loads with weights_only=True.
    Serialised in memory first, so a full disk is a plain OSError (ENOSPC) naming the file."""
    buf = _io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


#: what torch.load raises for a file that is truncated, not a torch file, or not weights-only
LOAD_ERRORS = (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError,
               AttributeError, KeyError, TypeError)


def load_tensors(path, map_location="cpu", stage: str | None = None):
    """``torch.load(weights_only=True)``; with ``stage`` (what rewrites the file), a missing or
    unreadable file is one UserError naming it (a pickle of other objects included)."""
    if stage is None:
        return torch.load(path, map_location=map_location, weights_only=True)
    if not Path(path).is_file():
        raise UserError(f"{path} not found; run {stage}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except LOAD_ERRORS as e:
        raise UserError(f"{path} cannot be loaded as tensors ({_first_line(e)}); it is truncated, corrupt "
                        f"or not a checkpoint of this harness: rerun {stage}") from None


def read_table(path, stage: str, columns: list[str] | None = None) -> pd.DataFrame:
    """A parquet (or ``.csv``) file; missing, unreadable or lacking ``columns`` -> one UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found; run {stage}")
    try:
        df = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - pyarrow/pandas raise many types for a bad file
        raise UserError(f"{path} is truncated or not a {path.suffix[1:]} table ({_first_line(e)}); "
                        f"rerun {stage}") from None
    missing = [c for c in columns or () if c not in df.columns]
    if missing:
        raise UserError(f"{path} lacks columns {', '.join(missing)} (another version or another file); rerun {stage}")
    return df


def read_json(path, stage: str, kind: type = dict):
    """A JSON file holding a ``kind``; missing, unreadable or of another shape -> one UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found; run {stage}")
    try:
        obj = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is truncated or not JSON ({_first_line(e)}); rerun {stage}") from None
    if not isinstance(obj, kind):
        raise UserError(f"{path} holds a {type(obj).__name__}, not a {kind.__name__}; rerun {stage}")
    return obj


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


_RENAME_EXCHANGE = 2


def swap_dir(new, dest) -> None:
    """Put the finished directory ``new`` at ``dest``, replacing what is there only now.

    On Linux the two are exchanged atomically (``renameat2(RENAME_EXCHANGE)``), so ``dest``
    always holds one complete tree; elsewhere (or where the file system refuses) the old tree is
    renamed aside first, a window of one rename. The old tree is then deleted."""
    new, dest = Path(new), Path(dest)
    if not dest.exists():
        os.replace(new, dest)
        return
    if _exchange(new, dest):
        shutil.rmtree(new, ignore_errors=True)
        return
    old = dest.with_name(f".{dest.name}.replaced")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(dest, old)
    os.replace(new, dest)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0


def _jsonable(o):
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
