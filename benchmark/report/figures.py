"""Figures drawn from metrics alone (no model needed), and the figure files the page embeds.

A protocol asks for figures in its YAML (data, never its name):

    figures:
      - {kind: severity_curves}   # Fig. 7: AUC vs severity, one panel per perturbation,
                                  #   one line per method (subset ``all``, mean over seeds)
      - {kind: dots}              # its table as dots: a panel per column group, the columns
                                  #   on x, a dot per row (method) with its 95 % CI whiskers
      - {kind: bars}              # its measured table as grouped bars (ablations)
      - {kind: roc, test_set: T}  # ROC curves on test set T (from ``benchmark.report.series``)

Optional keys: ``level`` (default: the protocol's first level), ``subset`` (default ``all``,
severity curves only). Each figure is written as ``<out>/<protocol>_<kind>.png`` and ``.svg``
with its caption in ``.txt``; ``Figure`` records them for the page. PNG and SVG bytes are
deterministic (no dates, fixed SVG hash salt). ``plot_files(dir)`` lists the figures another
stage left as ``<name>.png`` (+ optional ``<name>.txt`` caption), sorted by name.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.errors import UserError
from benchmark.io import atomic_path
from benchmark.evaluation.metrics import LEVELS

KINDS = ("severity_curves", "bars", "dots", "roc")


@dataclass
class Figure:
    name: str
    png: Path
    caption: str

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png.read_bytes()).decode("ascii")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    matplotlib.rcParams.update({"svg.hashsalt": "dpl-benchmark", "font.size": 9,
                                "axes.spines.top": False, "axes.spines.right": False})
    return plt


def save(fig, out_dir: Path, name: str, caption: str) -> Figure:
    """PNG + SVG (deterministic bytes) + caption .txt, each written atomically."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    for ext, meta in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
        with atomic_path(out_dir / f"{name}.{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=110, metadata=meta, bbox_inches="tight")
    with atomic_path(out_dir / f"{name}.txt") as tmp:
        tmp.write_text(caption + "\n")
    plt.close(fig)
    return Figure(name, out_dir / f"{name}.png", caption)


def severity_curves(metrics: pd.DataFrame, name: str, level: str, subset: str,
                    method_labels: dict, out_dir: Path) -> Figure | None:
    rows = metrics[(metrics["protocol"] == name) & (metrics["level"] == level)
                   & (metrics["subset"].astype(str) == subset) & metrics["severity"].notna()]
    if rows.empty:
        return None
    auc = rows.groupby(["perturbation", "method", "severity"])["auc"].mean()
    perts = sorted(rows["perturbation"].astype(str).unique())
    methods = [m for m in method_labels if m in set(rows["method"])] + sorted(
        set(rows["method"]) - set(method_labels))
    plt = _pyplot()
    cols = min(4, len(perts))
    nrows = -(-len(perts) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(2.6 * cols, 2.3 * nrows), squeeze=False,
                             sharey=True)
    for ax, pert in zip(axes.flat, perts):
        for i, m in enumerate(methods):
            if (pert, m) not in auc.index.droplevel(2):
                continue
            s = auc.loc[(pert, m)]
            ax.plot(s.index.astype(int), 100 * s.to_numpy(), marker="o", ms=3,
                    label=method_labels.get(m, m), color=f"C{i}")
        ax.set_title(pert)
        ax.set_xlabel("severity")
        ax.grid(alpha=.3)
    for ax in list(axes.flat)[len(perts):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{level} AUC (%)")
    axes.flat[0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    caption = (f"{name}: {level}-level AUC (subset {subset}) against severity, one panel per "
               "perturbation, one line per method (mean over seeds); shaped like paper Fig. 7.")
    return save(fig, out_dir, f"{name}_severity_curves", caption)


def table_bars(table, out_dir: Path) -> Figure | None:
    """The first measured table of a protocol as grouped bars: one group per column."""
    cols = []
    start = 0
    for g, span in table.groups or [("", len(table.columns))]:
        cols += [f"{g} · {c}".strip(" ·") for c in table.columns[start:start + span]]
        start += span
    keep = [j for j, c in enumerate(cols) if not c.endswith("Avg")] or list(range(len(cols)))
    if not table.rows or not keep:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(3.5, 0.9 * len(keep) * max(1, len(table.rows)) / 2), 2.6))
    width = 0.8 / len(table.rows)
    x = np.arange(len(keep))
    for i, (label, cells) in enumerate(table.rows):
        vals = [cells[j].value if cells[j].value is not None else np.nan for j in keep]
        ax.bar(x + (i - (len(table.rows) - 1) / 2) * width, vals, width, label=label, color=f"C{i}")
    ax.set_xticks(x, [cols[j] for j in keep], rotation=30 if len(keep) > 4 else 0, ha="right"
                  if len(keep) > 4 else "center")
    ax.set_ylabel(f"{table.level} AUC (%)")
    finite = [c.value for _, cells in table.rows for c in cells if c.value is not None]
    if finite:
        ax.set_ylim(max(0.0, min(finite) - 5), min(100.0, max(finite) + 3))
    ax.legend(fontsize=7, frameon=False, ncol=2)
    ax.grid(axis="y", alpha=.3)
    fig.tight_layout()
    caption = f"{table.title}, as bars (Avg columns left out)."
    return save(fig, out_dir, f"{table.protocol}_bars", caption)


def table_dots(table, out_dir: Path) -> Figure | None:
    """A measured table as dots with CI whiskers: one panel per column group, its columns on x
    (Avg left out), one dot per row, rows side by side within a column; legend below."""
    import re
    groups = table.groups or [("", len(table.columns))]
    keep = [j for j, c in enumerate(table.columns) if c != "Avg"]
    if not table.rows or not keep:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(groups), figsize=(max(4.0, 3.4 * len(groups)), 3.0), sharey=True, squeeze=False)
    start, n = 0, len(table.rows)
    for ax, (g, span) in zip(axes[0], groups):
        cols = [j for j in keep if start <= j < start + span]
        for i, (label, cells) in enumerate(table.rows):
            x = np.arange(len(cols)) + (i - (n - 1) / 2) * (0.8 / max(n, 1))
            y = np.array([cells[j].value if cells[j].value is not None else np.nan for j in cols])
            ci = [re.findall(r"([0-9.]+)–([0-9.]+)", cells[j].ci) for j in cols]
            lo = np.array([float(c[0][0]) if c else np.nan for c in ci])
            hi = np.array([float(c[0][1]) if c else np.nan for c in ci])
            err = np.vstack([np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)])
            ax.errorbar(x, y, yerr=np.where(np.isfinite(err), err, 0), fmt="o", ms=4, capsize=2, lw=1,
                        color=f"C{i % 10}", label=label)
        ax.set_xticks(np.arange(len(cols)), [table.columns[j] for j in cols])
        ax.set_title(g or table.title.split(":")[0], fontsize=9)
        ax.axhline(50, color="0.6", lw=0.8, ls=":")
        ax.grid(axis="y", alpha=.3)
        start += span
    axes[0][0].set_ylabel(f"{table.level} AUC (%)")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=min(n, 5), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, -0.02 - 0.045 * ((n - 1) // 5)))
    fig.tight_layout(rect=(0, 0.06 + 0.045 * ((n - 1) // 5), 1, 1))
    caption = (f"{table.title}: a dot per {table.row_title.lower()} and column with its 95 % bootstrap CI "
               "(whiskers, where measured), Avg left out; the dotted line is chance.")
    return save(fig, out_dir, f"{table.protocol}_dots", caption)


def roc_figure(frames: dict, protocol: str, test_set: str, labels: dict, out_dir: Path) -> Figure | None:
    """{method: (fpr, tpr) frame} (``benchmark.report.series.roc_frame``) as one line per method."""
    if not frames:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    order = [m for m in labels if m in frames] + sorted(set(frames) - set(labels))
    for i, m in enumerate(order):
        ax.plot(frames[m]["fpr"], frames[m]["tpr"], lw=1.2, color=f"C{i % 10}", label=labels.get(m, m))
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls=":")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    caption = (f"{protocol}: frame-level ROC curves on test set {test_set}, every test condition and seed pooled "
               "(so not the mean-over-conditions AUC of the table), one line per method; dotted: chance.")
    return save(fig, out_dir, f"{protocol}_roc", caption)


def protocol_figures(metrics: pd.DataFrame, name: str, protocol: dict, tables: list,
                     method_labels: dict, out_dir: Path, rocs: dict | None = None) -> list[Figure]:
    out = []
    for spec in protocol.get("figures") or []:
        kind = (spec or {}).get("kind")
        if kind not in KINDS:
            raise UserError(f"protocols/{name}.yaml: figure kind {kind!r} unknown; use one of {', '.join(KINDS)}")
        level = spec.get("level") or next((lv for lv in protocol.get("levels", LEVELS)), "frame")
        if kind == "severity_curves":
            fig = severity_curves(metrics, name, level, str(spec.get("subset", "all")),
                                  method_labels, out_dir)
        elif kind == "roc":
            test_set = str(spec.get("test_set") or protocol["test_sets"][0]["name"])
            fig = roc_figure((rocs or {}).get((name, test_set), {}), name, test_set, method_labels, out_dir)
        elif kind == "dots":
            mine = [t for t in tables if t.level == level] or tables
            fig = table_dots(mine[0], out_dir) if mine else None
        else:
            mine = [t for t in tables if t.level == level] or tables
            fig = table_bars(mine[0], out_dir) if mine else None
        if fig is not None:
            out.append(fig)
    return out


def plot_files(plot_dir) -> list[Figure]:
    """Figures other stages left in ``plot_dir``: every ``*.png`` with its ``.txt`` caption."""
    plot_dir = Path(plot_dir)
    out = []
    for png in sorted(plot_dir.glob("*.png")) if plot_dir.is_dir() else []:
        txt = png.with_suffix(".txt")
        out.append(Figure(png.stem, png, txt.read_text().strip() if txt.is_file() else png.stem))
    return out
