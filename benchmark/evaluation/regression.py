"""The CI regression check on AUC: ``results/metrics.csv`` against ``results/reference.json``.

``reference_rows(metrics_df)``: the headline AUC of every measured block (``KEYS``), mean over
seeds -- what a reference records and what a check compares.

``make_reference(metrics_df, params, profile, commit, made_with) -> dict``: the JSON written by
``update-reference``: ``{"format": 2, "tolerance": t, "profile": ..., "params_hash": ...,
"params": {...}, "grid": {...}, "commit": ..., "rows": [...]}`` with rows sorted by ``KEYS`` (same
metrics, same bytes). ``params``/``params_hash`` say which grid made the metrics
(``benchmark.evaluation.comparable``: the report stage records them beside metrics.csv).

Like with like: ``check_regression`` first compares the params that made the metrics on disk
with the reference's; when they differ (another profile, an override, a changed default) it
refuses with one line naming the differing keys and the command that would compare them
(``check-regression profile=<the reference's> rerun=true``), exit 2, never a false FAILED.
``check_comparable`` does the same for the current params before ``rerun=true`` runs a grid.

``compare(reference, metrics_df, tolerance) -> Verdict``: every reference row is looked up in
the current metrics. A row regresses when its AUC dropped by more than ``tolerance`` (absolute,
AUC in [0, 1]), became undefined (NaN) or is missing; rows that are new, or moved by at most
the tolerance, pass. ``Verdict.text()`` is a readable table of every row whose AUC changed
more than the tolerance (up or down) or that is missing/new, followed by one line per failing
method explaining what changed (which blocks, how much, and whether rows vanished because a
method, protocol or test set left the grid).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmark.errors import UserError
from benchmark.evaluation import comparable
from benchmark.evaluation.metrics import headline_rows

KEYS = ["protocol", "method", "train_set", "test_set", "quality", "perturbation", "subset", "level"]
FORMAT = 2
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
                   commit: str | None = None, made_with: dict | None = None) -> dict:
    """``made_with``: the record of the params that made ``metrics_df`` (default: ``params``')."""
    rows = reference_rows(metrics_df)
    made_with = made_with or comparable.record(params)
    return {
        "format": FORMAT,
        "what": "headline AUC per block of results/metrics.csv (mean over seeds), "
                "written by `python -m benchmark update-reference`",
        "tolerance": float(params["regression"]["tolerance"]),
        "profile": profile,
        "params_hash": made_with["params_hash"],
        "params": made_with["params"],
        "grid": {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in params["grid"].items()},
        "commit": commit,
        "rows": [{**{k: r[k] for k in KEYS},
                  "auc": None if pd.isna(r["auc"]) else round(float(r["auc"]), 6)}
                 for r in rows.to_dict("records")],
    }


def _regenerate(profile) -> str:
    return f"python -m benchmark update-reference{f' profile={profile}' if profile else ''}"


def load_reference(path) -> dict:
    from benchmark import io
    path = Path(path)
    ref = io.read_json(path, f"`{_regenerate('ci')}`")
    if not isinstance(ref.get("rows"), list):
        raise UserError(f"{path} is not a regression reference; regenerate it with `{_regenerate('ci')}`")
    if ref.get("format") != FORMAT or not isinstance(ref.get("params"), dict):
        raise UserError(f"{path} is a format-{ref.get('format')} reference, which does not record the params it "
                        f"was made with; regenerate it with `{_regenerate(ref.get('profile'))}`")
    for i, row in enumerate(ref["rows"]):
        if not isinstance(row, dict) or set(KEYS + ["auc"]) - set(row) or not (
                row["auc"] is None or isinstance(row["auc"], (int, float))):
            raise UserError(f"{path}: rows[{i}] is not a row of {', '.join(KEYS)}, auc; regenerate it with "
                            f"`{_regenerate(ref.get('profile'))}`")
    return ref


def load_record(path=comparable.RECORD) -> dict:
    """The params record the report stage wrote beside metrics.csv."""
    from benchmark import io
    rec = io.read_json(path, "the report stage (python -m benchmark report), or compare a fresh grid "
                             "(check-regression profile=ci rerun=true)")
    if not isinstance(rec.get("params"), dict):
        raise UserError(f"{path} is not a params record; rerun the report stage (python -m benchmark report)")
    return rec


def _refuse(what: str, made_with: dict, ref: dict, ref_path, params: dict) -> None:
    """One line when ``made_with`` (a params record) is not the grid ``ref`` was made with."""
    diffs = comparable.differences(ref["params"], made_with["params"], params)
    if diffs:
        profile = ref.get("profile")
        raise UserError(
            f"{what} {comparable.describe(made_with['params'])}, but {ref_path} was made with "
            f"{f'profile {profile}' if profile else comparable.describe(ref['params'])} "
            f"({comparable.show_differences(diffs)}), so they cannot be compared; to compare like with like run "
            f"`python -m benchmark check-regression{f' profile={profile}' if profile else ''} rerun=true`")


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


def check(metrics_csv, reference_json, tolerance, params: dict | None = None, record_json=None) -> Verdict:
    """Load both files and compare them (tolerance: params.yaml ``regression.tolerance``). With
    ``params``, the metrics' params record (``record_json``, default beside metrics.csv) must
    match the reference's first (module docstring)."""
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
    ref = load_reference(reference_json)
    if params is not None:
        record_json = Path(record_json) if record_json else metrics_csv.with_name(comparable.RECORD.name)
        _refuse(f"{metrics_csv} holds the metrics of", load_record(record_json), ref, reference_json, params)
    return compare(ref, read_metrics(metrics_csv), tol)


def read_metrics(path) -> pd.DataFrame:
    from benchmark import io
    df = io.read_table(path, "the report stage (python -m benchmark report)")
    missing = [c for c in KEYS + ["auc", "severity", "seed"] if c not in df.columns]
    if missing:
        raise UserError(f"{path} lacks columns {', '.join(missing)}; rerun the report stage (python -m benchmark report)")
    return df


def check_regression(params: dict, metrics_csv="results/metrics.csv") -> Verdict:
    """Compare ``metrics_csv`` (the workspace's, or an override run's copy, with its params record
    beside it) with the reference params ``regression`` names."""
    cfg = params["regression"]
    return check(metrics_csv, cfg["reference"], cfg["tolerance"], params)


def check_comparable(params: dict, profile: str | None = None) -> None:
    """Refuse (one line) before a rerun when the current params are not the reference's grid."""
    ref_path = params["regression"]["reference"]
    _refuse(f"the current params ({'profile ' + profile if profile else 'no profile'}) are", comparable.record(params),
            load_reference(ref_path), ref_path, params)


def update_reference(params: dict, profile: str | None = None, commit: str | None = None,
                     metrics_csv="results/metrics.csv") -> Path:
    """Deliberately rewrite the reference from the grid's metrics on disk, which must have been
    made with the current params (they are what the reference records)."""
    from benchmark import io
    metrics_csv = Path(metrics_csv)
    if not metrics_csv.is_file():
        raise UserError(f"{metrics_csv} not found; run update-reference with rerun=true")
    made_with = load_record(metrics_csv.with_name(comparable.RECORD.name))
    diffs = comparable.differences(made_with["params"], comparable.grid_params(params), params)
    if diffs:
        raise UserError(f"{metrics_csv} holds the metrics of {comparable.describe(made_with['params'])}, not of the "
                        f"current params ({comparable.show_differences(diffs)}); run `python -m benchmark "
                        f"update-reference{f' profile={profile}' if profile else ''} rerun=true`")
    ref = make_reference(read_metrics(metrics_csv), params, profile, commit, made_with)
    path = Path(params["regression"]["reference"])
    io.write_json(path, ref)
    return path
