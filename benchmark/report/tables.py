"""Build paper-shaped table models from metrics rows, driven by a protocol's ``table`` spec.

Spec (protocol YAML ``table:``), every key names a column of the metrics frame:

- ``rows`` (default ``method``): one table row per value.
- ``column_groups`` (default ``test_set``; null for none): one block of columns per value.
- ``columns`` (default ``subset``): one column per value inside each block.
- ``avg`` (default true): append an ``Avg`` column to each block with more than one column,
  the mean of that block's shown cells (empty if one of them is), as the paper's ``Avg.``; the
  pooled subset ``all``, if shown, is not averaged in.
- ``metric`` (default ``auc``): the metrics column shown, ×100 with two decimals.
- ``paper_tables``: only quoted in the caption.

Which values appear, and in what order: when the protocol lists a dimension under its plural
name (``subsets``, ``test_sets`` -- strings, or dicts with ``name`` and optional ``label``),
exactly the listed values present in the data, in that order (so ``all`` is not a column unless
listed; a listed dimension that splits tables keeps only its listed values); for ``method``, the order of ``provenance["methods"]``, then any other by name; for
an unlisted ``subset``, DF F2F FS NT, others, ``all``; otherwise sorted. A protocol without a
``table`` spec gets the defaults. Rows are headline rows (``benchmark.metrics.headline_rows``) averaged over
seeds; with ``severity`` as a dimension, the per-condition rows instead (e.g. the robustness
protocol: columns = severity 1..5, whose ``Avg`` is the headline mean). A dimension the spec does not name that still varies inside a cell (e.g. several
perturbations) splits the output into one table per value, named in the caption.

Marks, per column (Avg included), higher is better (lower for ``eer``), on the values as
displayed (2 decimals):
every cell equal to the best value is ``best`` (bold); every cell equal to the next lower
distinct value is ``second`` (underlined). With a single row, or when all rows tie, nothing is
underlined. Empty cells (NaN) are shown as a dash and never marked.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd

from benchmark.evaluation.metrics import LEVELS, subset_rank, headline_rows

DEFAULT_SPEC = {"rows": "method", "column_groups": "test_set", "columns": "subset"}
LOWER_IS_BETTER = {"eer"}
POOLED = "all"  # the pooled subset: shown only where listed, never part of an Avg
SPLIT_CANDIDATES = ["train_set", "test_set", "quality", "perturbation", "subset", "method"]
DIM_TITLES = {"method": "Method", "test_set": "Test set", "train_set": "Train set",
              "subset": "Subset", "quality": "Quality", "perturbation": "Perturbation"}


@dataclass
class Cell:
    value: float | None  # the displayed number (already ×100, rounded), None when empty
    text: str
    mark: str | None = None  # "best" | "second" | None
    ci: str = ""  # "95 % CI 81.20–88.40" when the metrics have auc_ci_low/high, else ""
    sd: str = ""  # "± 1.02": standard deviation over seeds (×100), when more than one seed


@dataclass
class Table:
    protocol: str
    level: str
    title: str
    caption: str
    row_title: str
    groups: list[tuple[str, int]]  # (label, number of columns); empty when no column groups
    columns: list[str]
    rows: list[tuple[str, list[Cell]]]
    methods: list[str] = field(default_factory=list)  # methods shown, for the provenance line
    seeds: list[int] = field(default_factory=list)
    conditions: str = ""  # e.g. "mean over 4 random_jpeg conditions"
    train_sets: list[str] = field(default_factory=list)
    split: str = ""  # e.g. "perturbation = CS" when the table is one of several
    provenance: list[str] = field(default_factory=list)  # filled by benchmark.report
    kind: str = "measured"  # "measured" | "paper" (published numbers) | "extra" (cost, tests) | "diff"
    row_keys: list[str] = field(default_factory=list)  # the rows' values (method, train set, ...)
    col_keys: list[tuple[str, str]] = field(default_factory=list)  # (group value, column value); "Avg"

    @property
    def anchor(self) -> str:
        """An id / \\label safe in HTML and LaTeX: letters, digits and dashes."""
        return re.sub(r"[^A-Za-z0-9]+", "-", f"tab {self.protocol} {self.level} {self.split}").strip("-")

    @property
    def colspec(self) -> str:
        return "l" + "c" * len(self.columns)

    @property
    def group_ranges(self) -> list[tuple[int, int]]:
        """1-based LaTeX column ranges of the groups (column 1 holds the row labels)."""
        out, start = [], 2
        for _, span in self.groups:
            out.append((start, start + span - 1))
            start += span
        return out


def _listed(dim: str, protocol: dict) -> list[tuple[str, str]] | None:
    """[(value, label)] the protocol lists for ``dim`` under its plural key, else None."""
    entries = protocol.get(dim + "s")
    if not isinstance(entries, list):
        return None
    out = []
    for e in entries:
        if isinstance(e, dict):
            if "name" in e:
                out.append((str(e["name"]), str(e.get("label", e["name"]))))
        else:
            out.append((str(e), str(e)))
    return out


def axis(dim: str, present, protocol: dict, provenance: dict) -> list[tuple[str, str]]:
    """Ordered [(value, label)] for one table dimension (see the module docstring)."""
    present = [str(v) for v in pd.unique(pd.Series(list(present), dtype=object).dropna())]
    listed = _listed(dim, protocol)
    marks = (provenance.get("marks") or {}) if dim == "method" else {}  # rows to read with care (notes)
    if marks:
        plain = axis(dim, present, protocol, {**provenance, "marks": {}})
        return [(v, f"{lab} {marks[v]}" if v in marks else lab) for v, lab in plain]
    if listed is not None:
        return [(v, lab) for v, lab in listed if v in present]
    if dim == "method":
        known = provenance.get("methods") or {}
        order = [str(m) for m in known]
        rest = sorted(v for v in present if v not in order)
        labels = {str(m): str((known[m] or {}).get("label", m)) if isinstance(known, dict)
                  else str(m) for m in known}
        return [(v, labels.get(v, v)) for v in order if v in present] + [(v, v) for v in rest]
    return [(v, v) for v in sorted(present, key=subset_rank if dim == "subset" else None)]


def _fmt(v, ci: str = "", sd=None) -> Cell:
    if v is None or pd.isna(v):
        return Cell(None, "–")
    shown = float(f"{100.0 * float(v):.2f}")
    return Cell(shown, f"{shown:.2f}", ci=ci, sd="" if sd is None or pd.isna(sd) else f"± {100 * float(sd):.2f}")


def _cis(head: pd.DataFrame, cell_dims: list[str]) -> dict[tuple, str]:
    """'95 % CI lo–hi' (×100) per cell where both bounds exist; with several seeds the bounds
    are the means of the seeds' bounds (said in the text)."""
    if "auc_ci_low" not in head or head[["auc_ci_low", "auc_ci_high"]].isna().all().all():
        return {}
    out = {}
    for k, part in head.groupby(cell_dims, dropna=False):
        part = part.dropna(subset=["auc_ci_low", "auc_ci_high"])
        if part.empty:
            continue
        k = tuple(map(str, k if isinstance(k, tuple) else (k,)))
        lo, hi = 100 * part["auc_ci_low"].astype(float).mean(), 100 * part["auc_ci_high"].astype(float).mean()
        seeds = f", mean of {len(part)} seeds' bounds" if len(part) > 1 else ""
        out[k] = f"95 % CI {lo:.2f}–{hi:.2f}{seeds}"
    return out


def mark_column(cells: list[Cell], higher_is_better: bool = True) -> None:
    """Bold every best cell, underline every cell at the next distinct value (in place)."""
    distinct = sorted({c.value for c in cells if c.value is not None}, reverse=higher_is_better)
    for c in cells:
        if distinct and c.value == distinct[0]:
            c.mark = "best"
        elif len(distinct) > 1 and c.value == distinct[1]:
            c.mark = "second"


def _split_dims(rows: pd.DataFrame, cell_dims: list[str]) -> list[str]:
    out = []
    for d in SPLIT_CANDIDATES:
        if d in cell_dims or d not in rows or rows[d].isna().all():
            continue
        if (rows.groupby(cell_dims, dropna=False)[d].nunique(dropna=False) > 1).any():
            out.append(d)
    return out


def _conditions(rows: pd.DataFrame, metrics: pd.DataFrame) -> str:
    """How the shown values pool conditions, from the per-condition rows behind them."""
    keys = ["protocol", "method", "train_set", "test_set", "perturbation", "subset", "level"]
    cond = metrics[metrics["severity"].notna()].merge(rows[keys].drop_duplicates(), on=keys)
    if cond.empty or cond["severity"].nunique() < 2:
        return ""
    perts = ", ".join(sorted(str(p) for p in cond["perturbation"].dropna().unique()))
    return f"mean over {cond['severity'].nunique()} {perts} conditions".replace("  ", " ")


def build_tables(metrics: pd.DataFrame, name: str, protocol: dict,
                 provenance: dict) -> list[Table]:
    """All tables of one protocol: one per level (protocol ``levels`` order), per split value."""
    spec = {**DEFAULT_SPEC, **(protocol.get("table") or {})}
    rows_dim, group_dim, col_dim = spec["rows"], spec["column_groups"], spec["columns"]
    metric = spec.get("metric", "auc")
    mine = metrics[metrics["protocol"] == name]
    levels = [lv for lv in protocol.get("levels", LEVELS) if lv in set(mine["level"])]
    cell_dims = [d for d in (rows_dim, group_dim, col_dim) if d]
    tables = []
    for level in levels:
        at = mine[mine["level"] == level]  # columns = severity: the per-condition rows, Avg = headline
        head = at[at["severity"].notna()] if "severity" in cell_dims else headline_rows(at)
        for d in SPLIT_CANDIDATES:  # a listed dimension that is not a cell dimension: listed values only
            if d not in cell_dims and _listed(d, protocol) is not None and d in head:
                head = head[head[d].astype(str).isin([v for v, _ in _listed(d, protocol)])]
        splits = _split_dims(head, cell_dims)
        parts = [((), head)] if not splits else head.groupby(splits, dropna=False, sort=True)
        for split_key, part in parts:
            split_key = split_key if isinstance(split_key, tuple) else (split_key,)
            split = ", ".join(f"{d} = {v}" for d, v in zip(splits, split_key))
            tables.append(_one_table(part, mine, name, protocol, provenance, spec, level,
                                     metric, split))
    return [t for t in tables if t.rows]


def _one_table(head, metrics, name, protocol, provenance, spec, level, metric, split) -> Table:
    rows_dim, group_dim, col_dim = spec["rows"], spec["column_groups"], spec["columns"]
    cell_dims = [d for d in (rows_dim, group_dim, col_dim) if d]
    values = head.groupby(cell_dims, dropna=False)[metric].agg(lambda a: a.mean(skipna=False))
    values.index = values.index.map(lambda k: tuple(map(str, k if isinstance(k, tuple) else (k,))))
    sds = head.groupby(cell_dims, dropna=False)[metric].agg(lambda a: a.std(ddof=1) if a.count() > 1 else None)
    sds.index = values.index
    cis = _cis(head, cell_dims) if metric == "auc" else {}
    row_axis = axis(rows_dim, head[rows_dim], protocol, provenance)
    group_axis = axis(group_dim, head[group_dim], protocol, provenance) if group_dim else [("", "")]
    col_axis = axis(col_dim, head[col_dim], protocol, provenance)
    averaged = [c != POOLED or col_dim != "subset" for c, _ in col_axis]
    add_avg = bool(spec.get("avg", True)) and sum(averaged) > 1
    groups, columns, col_keys = [], [], []
    grid: list[list[Cell]] = [[] for _ in row_axis]
    for g, g_label in group_axis:
        cols = [c for c, _ in col_axis]
        groups.append((f"{DIM_TITLES.get(group_dim, group_dim)} {g_label}" if group_dim else "",
                       len(cols) + add_avg))
        columns += [lab for _, lab in col_axis] + (["Avg"] if add_avg else [])
        col_keys += [(g, c) for c in cols] + ([(g, "Avg")] if add_avg else [])
        for i, (r, _) in enumerate(row_axis):
            raw = [values.get(_key(cell_dims, {rows_dim: r, group_dim: g, col_dim: c}))
                   for c in cols]
            keys = [_key(cell_dims, {rows_dim: r, group_dim: g, col_dim: c}) for c in cols]
            grid[i] += [_fmt(v, cis.get(k, ""), sds.get(k)) for v, k in zip(raw, keys)]
            if add_avg:
                raw = [v for v, a in zip(raw, averaged) if a]
                ok = all(v is not None and not pd.isna(v) for v in raw)
                grid[i].append(_fmt(sum(raw) / len(raw) if ok else None))
    for j in range(len(columns)):
        mark_column([grid[i][j] for i in range(len(row_axis))], metric not in LOWER_IS_BETTER)
    seeds = sorted(int(s) for s in head["seed"].dropna().unique())
    paper = ", ".join(map(str, spec.get("paper_tables", []) or []))
    title = (f"{name}: {level}-level {metric.upper()} (%)" + (f", {split}" if split else "")
             + (f", shaped like paper Tab. {paper}" if paper else ""))
    caption = str(protocol.get("description") or "")
    return Table(
        protocol=name, level=level, title=title, caption=caption,
        row_title=DIM_TITLES.get(rows_dim, rows_dim), groups=groups if group_dim else [],
        columns=columns, rows=[(lab, grid[i]) for i, (_, lab) in enumerate(row_axis)],
        methods=([r for r, _ in row_axis] if rows_dim == "method"
                 else sorted(map(str, head["method"].unique()))),
        seeds=seeds, conditions=_conditions(head, metrics), split=split,
        train_sets=sorted(map(str, head["train_set"].dropna().unique())),
        row_keys=[r for r, _ in row_axis], col_keys=col_keys)


def _key(cell_dims: list[str], at: dict) -> tuple:
    return tuple(str(at[d]) for d in cell_dims)
