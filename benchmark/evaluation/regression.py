"""The CI regression check on AUC: ``results/metrics.csv`` against ``results/reference.json``.

``reference_rows(metrics_df)``: the headline AUC of every measured block (``KEYS``), mean over
seeds -- what a reference records and what a check compares.

``make_reference(metrics_df, params) -> dict``: the JSON written by ``update-reference``:
``{"format": 1, "tolerance": t, "profile": ..., "grid": {...}, "commit": ..., "rows": [...]}``
with rows sorted by ``KEYS`` (same metrics, same bytes).

``compare(reference, metrics_df, tolerance) -> Verdict``: every reference row is looked up in
the current metrics. A row regresses when its AUC dropped by more than ``tolerance`` (absolute,
AUC in [0, 1]), became undefined (NaN) or is missing; rows that are new, or moved by at most
the tolerance, pass. ``Verdict.text()`` is a readable table of every row whose AUC changed
more than the tolerance (up or down) or that is missing/new, followed by one line per failing
method explaining what changed (which blocks, how much, and whether rows vanished because a
method, protocol or test set left the grid).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmark.errors import UserError
from benchmark.evaluation.metrics import headline_rows

KEYS = ["protocol", "method", "train_set", "test_set", "quality", "perturbation", "subset", "level"]
FORMAT = 1
EPS = 1e-6  # references store AUCs rounded to 6 decimals


def _key_frame(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for k in KEYS:
        out[k] = out[k].astype(object).where(out[k].notna(), "").astype(str)
    return out


def reference_rows(metrics_df: pd.DataFrame) -> pd.DataFrame:
    """Headline AUC per ``KEYS`` block, mean over seeds (NaN if any seed is NaN)."""
    head = _key_frame(headline_rows(metrics_df))
    if head.empty:
        return pd.DataFrame(columns=KEYS + ["auc"])
    auc = head.groupby(KEYS, sort=True)["auc"].agg(lambda a: a.mean(skipna=False))
    return auc.reset_index()


def make_reference(metrics_df: pd.DataFrame, params: dict, profile: str | None = None,
                   commit: str | None = None) -> dict:
    rows = reference_rows(metrics_df)
    return {
        "format": FORMAT,
        "what": "headline AUC per block of results/metrics.csv (mean over seeds), "
                "written by `python -m benchmark update-reference`",
        "tolerance": float(params["regression"]["tolerance"]),
        "profile": profile,
        "grid": {k: list(v) for k, v in params["grid"].items()},
        "commit": commit,
        "rows": [{**{k: r[k] for k in KEYS},
                  "auc": None if pd.isna(r["auc"]) else round(float(r["auc"]), 6)}
                 for r in rows.to_dict("records")],
    }


def load_reference(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found; create it with `python -m benchmark update-reference`")
    try:
        ref = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e}); regenerate it with update-reference") from None
    if not isinstance(ref, dict) or ref.get("format") != FORMAT or not isinstance(ref.get("rows"), list):
        raise UserError(f"{path} is not a format-{FORMAT} reference; regenerate it with update-reference")
    return ref


@dataclass
class Verdict:
    tolerance: float
    table: pd.DataFrame  # KEYS + reference, current, change, status; changed/missing/new only
    n_checked: int
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def text(self) -> str:
        lines = [f"regression check: {self.n_checked} reference AUCs, tolerance "
                 f"{self.tolerance:.4f} (absolute AUC drop)"]
        if not self.table.empty:
            shown = self.table.copy()
            for c in ("reference", "current", "change"):
                shown[c] = shown[c].map(lambda v: "-" if v is None or pd.isna(v) else f"{v:+.4f}"
                                        if c == "change" else f"{v:.4f}")
            cols = [k for k in KEYS if shown[k].astype(bool).any()]
            lines.append(shown[cols + ["reference", "current", "change", "status"]]
                         .to_string(index=False))
        else:
            lines.append("every AUC within tolerance of the reference; no rows missing or new")
        lines += [f"FAIL {f}" for f in self.failures]
        lines.append("RESULT: " + ("FAILED" if self.failures else "passed"))
        return "\n".join(lines)


def compare(reference: dict, metrics_df: pd.DataFrame, tolerance: float) -> Verdict:
    ref = pd.DataFrame(reference["rows"], columns=KEYS + ["auc"])
    ref = _key_frame(ref).rename(columns={"auc": "reference"})
    cur = reference_rows(metrics_df).rename(columns={"auc": "current"})
    both = ref.merge(cur, on=KEYS, how="outer", indicator=True)
    both["reference"] = pd.to_numeric(both["reference"], errors="coerce")
    both["change"] = both["current"] - both["reference"]
    both["status"] = [_status(r, tolerance) for r in both.to_dict("records")]
    both = both.drop(columns="_merge")
    shown = both[both["status"] != "ok"].reset_index(drop=True)
    return Verdict(tolerance, shown, int(len(ref)), _explain(both, ref, cur))


def _status(r: dict, tol: float) -> str:
    if r["_merge"] == "left_only":
        return "MISSING"
    if r["_merge"] == "right_only":
        return "new"
    ref, cur = r["reference"], r["current"]
    if pd.isna(ref):
        return "ok" if pd.isna(cur) else "new value"
    if pd.isna(cur):
        return "UNDEFINED"
    if cur < ref - tol - EPS:
        return "DROPPED"
    return "improved" if cur > ref + tol + EPS else "ok"


def _explain(both: pd.DataFrame, ref: pd.DataFrame, cur: pd.DataFrame) -> list[str]:
    out = []
    for (method, protocol), part in both.groupby(["method", "protocol"], sort=True):
        dropped = part[part["status"] == "DROPPED"]
        undefined = part[part["status"] == "UNDEFINED"]
        missing = part[part["status"] == "MISSING"]
        if len(dropped):
            worst = dropped.loc[dropped["change"].idxmin()]
            out.append(f"{method} on {protocol}: AUC dropped in {len(dropped)} of {len(part)} "
                       f"blocks, mean change {dropped['change'].mean():+.4f}, worst "
                       f"{worst['change']:+.4f} ({_where(worst)}: {worst['reference']:.4f} -> "
                       f"{worst['current']:.4f})")
        if len(undefined):
            out.append(f"{method} on {protocol}: AUC undefined (NaN) now in {len(undefined)} blocks "
                       f"that had one, e.g. {_where(undefined.iloc[0])} (only one class scored?)")
        if len(missing):
            out.append(f"{method} on {protocol}: {len(missing)} reference rows missing; "
                       + _why_missing(missing, cur, method, protocol))
    return out


def _where(r) -> str:
    return ", ".join(f"{k}={r[k]}" for k in ("test_set", "perturbation", "subset", "level") if r[k])


def _why_missing(missing: pd.DataFrame, cur: pd.DataFrame, method: str, protocol: str) -> str:
    if not (cur["protocol"] == protocol).any():
        return f"protocol {protocol} has no results at all (not in grid.protocols, or not run)"
    mine = cur[(cur["protocol"] == protocol) & (cur["method"] == method)]
    if mine.empty:
        return f"method {method} has no {protocol} results (removed from grid.methods, or not run)"
    gone = sorted(set(missing["test_set"]) - set(mine["test_set"]))
    if gone:
        return f"test sets {', '.join(gone)} no longer measured"
    return "e.g. " + _where(missing.iloc[0]) + " (a subset or level no longer measured)"


def check(metrics_csv, reference_json, tolerance) -> Verdict:
    """Load both files and compare them (tolerance: params.yaml ``regression.tolerance``)."""
    metrics_csv = Path(metrics_csv)
    if not metrics_csv.is_file():
        raise UserError(f"{metrics_csv} not found; run the grid first (`python -m benchmark "
                        "check-regression profile=ci rerun=true` does)")
    try:
        tol = float(tolerance)
    except (TypeError, ValueError):
        tol = float("nan")
    if not (math.isfinite(tol) and tol >= 0):
        raise UserError(f"regression.tolerance in params.yaml must be a number >= 0, got {tolerance!r}")
    return compare(load_reference(reference_json), pd.read_csv(metrics_csv), tol)


def check_regression(params: dict, metrics_csv="results/metrics.csv") -> Verdict:
    """Compare ``metrics_csv`` (the workspace's, or an experiment's copy) with the reference
    params ``regression`` names."""
    cfg = params["regression"]
    return check(metrics_csv, cfg["reference"], cfg["tolerance"])


def update_reference(params: dict, profile: str | None = None, commit: str | None = None,
                     metrics_csv="results/metrics.csv") -> Path:
    """Deliberately rewrite the reference from the grid's metrics on disk."""
    from benchmark import io
    metrics_csv = Path(metrics_csv)
    if not metrics_csv.is_file():
        raise UserError(f"{metrics_csv} not found; run update-reference with rerun=true")
    ref = make_reference(pd.read_csv(metrics_csv), params, profile, commit)
    path = Path(params["regression"]["reference"])
    io.write_json(path, ref)
    return path
