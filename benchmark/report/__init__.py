"""Reports: paper-shaped tables (HTML + LaTeX) and a self-contained HTML report.

``render_report(metrics_df, provenance, protocols, out_dir) -> list[Path]`` writes

- ``out_dir/report.html``: one page, inline CSS, no scripts or network; a header that warns
  when the dataset is synthetic and/or weights are randomly initialised (numbers then NOT
  comparable to the paper's), one section per protocol, a provenance section;
- ``out_dir/tables/<protocol>.html`` (same page, that protocol only) and
  ``out_dir/tables/<protocol>.tex`` (booktabs tables, one per level) for every protocol with
  rows in ``metrics_df``.

Optional extras (keyword arguments; None = left out, so tests never pick up stray files):

- ``paper_dir``: the published tables (``benchmark.report.paper``); a protocol's
  ``table.paper_tables`` numbers are shown beside its measured tables in a separate box
  ("published in the paper, not measured here") and appended to its .tex;
- ``figure_dir``: where this stage draws the figures protocols ask for
  (``benchmark.report.figures``: severity curves, bars), embedded in their section;
- ``plot_dirs``: directories whose ``*.png`` (+ ``.txt`` caption) other stages made; embedded
  inline (base64) in a "Figures" section;
- ``cost_csv`` / ``significance_csv``: rendered as their own sections and
  ``tables/cost.{html,tex}`` / ``tables/significance.{html,tex}`` when the file exists;
- ``histories``: {method: history.csv frame}: the training curves figure
  (``benchmark.report.curves``); ``analysis_dirs``: folders of the ``analyze`` stage, whose plots
  get an "analysis" section (one copy of a plot shared by several methods); ``rocs``:
  {(protocol, test set): {method: (fpr, tpr)}} for the protocols' ``roc`` figures.

The page opens with a table of contents (every section and its tables). Beside a protocol's first
frame-level table sit the published tables (a box) and, under the measured table, its difference
to them (``benchmark.report.paper.difference_table``); with several seeds every cell shows mean ±
sd over them. The layout wraps rather than overlaps (tests/test_report_page.py measures the boxes
in headless Chromium at 1024, 1400 and 1920 px).

Cells with ``auc_ci_low/high`` show the 95 % CI on hover (``title``) and under the value when
the page's CSS-only "show 95 % CIs" toggle is on (no scripts).

``metrics_df`` is the ``benchmark.metrics.compute_metrics`` frame. ``protocols`` maps a protocol
name to its YAML dict; its ``table`` spec drives the layout (``benchmark.report.tables``), and a
protocol with rows but no entry gets the default spec. Protocols come in ``protocols`` order,
then any other by name. The provenance dict is documented in ``benchmark.report.provenance_text``;
``provenance["methods"]`` order is the table row order. Same inputs give the same bytes: nothing
time-dependent is written unless ``provenance["generated"]`` says so. The caller writes
metrics.csv / metrics.json (``benchmark.metrics.metrics_json``).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.io import write_text
from benchmark.report import curves, extras, figures as figs, paper
from benchmark.report import provenance_text as prov_text
from benchmark.report.render import html_page, html_tables, tex_escape, tex_tables
from benchmark.report.tables import Table, build_tables

__all__ = ["render_report", "protocol_tables", "Table", "tex_escape"]

DEFAULT_TITLE = "DPL benchmark report"


def protocol_tables(metrics_df: pd.DataFrame, name: str, protocol: dict,
                    provenance: dict) -> list[Table]:
    """The tables of one protocol, each with its provenance line attached."""
    tables = build_tables(metrics_df, name, protocol or {}, provenance)
    for t in tables:
        t.provenance = prov_text.table_parts(provenance, t.methods, t.seeds, t.train_sets,
                                             t.conditions)
    return tables


def _order(metrics_df: pd.DataFrame, protocols: dict) -> list[str]:
    present = set(map(str, metrics_df["protocol"].dropna().unique()))
    listed = [p for p in protocols if p in present]
    return listed + sorted(present - set(listed))


def _figure(f: figs.Figure) -> dict:
    return {"name": f.name, "uri": f.data_uri(), "caption": f.caption}


def _method_labels(provenance: dict) -> dict:
    return {str(m): str((i or {}).get("label", m)) for m, i in (provenance.get("methods") or {}).items()}


def render_report(metrics_df: pd.DataFrame, provenance: dict, protocols: dict,
                  out_dir, *, paper_dir=None, figure_dir=None, plot_dirs=(),
                  cost_csv=None, significance_csv=None, histories=None, analysis_dirs=(),
                  rocs=None) -> list[Path]:
    """Write report.html and tables/<protocol>.{html,tex}; return the paths written."""
    out_dir = Path(out_dir)
    provenance = dict(provenance or {})
    if isinstance(provenance.get("methods"), (list, tuple)):  # a bare list of names is fine too
        provenance["methods"] = {str(m): {} for m in provenance["methods"]}
    title = provenance.get("title") or DEFAULT_TITLE
    warnings = prov_text.warnings(provenance)
    notes = [str(n) for n in provenance.get("notes") or []]
    details = prov_text.details(provenance)
    labels = _method_labels(provenance)
    written, sections = [], []
    if figure_dir:
        Path(figure_dir).mkdir(parents=True, exist_ok=True)  # a DVC output even when empty
    for name in _order(metrics_df, protocols):
        protocol = protocols.get(name) or {}
        tables = protocol_tables(metrics_df, name, protocol, provenance)
        if not tables:
            continue
        published = paper.paper_tables((protocol.get("table") or {}).get("paper_tables"),
                                       paper_dir) if paper_dir else []
        diffs = [d for d in (paper.difference_table(t, protocol, paper_dir) for t in tables
                             if t.level == "frame") if d is not None] if paper_dir else []
        drawn = figs.protocol_figures(metrics_df, name, protocol, tables, labels, figure_dir,
                                      rocs) if figure_dir else []
        written += [f.png for f in drawn] + [f.png.with_suffix(".svg") for f in drawn]
        section = {"name": name, "title": _title(name, protocol), "description": protocol.get("description", ""),
                   "blocks": _blocks(tables, published, diffs), "figures": [_figure(f) for f in drawn],
                   "toc": [(t.anchor, t.title) for t in tables]}
        sections.append(section)
        written += _write_tables(out_dir, name, f"{title}: {name}", warnings, notes, [section],
                                 details, tables + published + diffs)
    if histories and figure_dir:
        fig = curves.training_figure(histories, labels, figure_dir)
        if fig is not None:
            written += [fig.png, fig.png.with_suffix(".svg")]
            sections.append(_extra_section("training", "Training curves", [_figure(fig)]))
    for name, table in (("cost", extras.cost_table(cost_csv) if cost_csv else None),
                        ("significance", extras.significance_table(significance_csv)
                         if significance_csv else None)):
        if table is not None:
            section = {**_extra_section(name, name.capitalize(), []), "description": table.caption,
                       "blocks": _blocks([table], [], []), "toc": [(table.anchor, table.title)]}
            sections.append(section)
            written += _write_tables(out_dir, name, f"{title}: {name}", warnings, notes,
                                     [section], details, [table])
    seen, analysis = set(), []
    for d in analysis_dirs or ():
        for f in figs.plot_files(d):
            if f.name not in seen:  # the indicator-level histograms are the same for every method
                seen.add(f.name)
                analysis.append(_figure(f))
    if analysis:
        sections.append(_extra_section("analysis", "Analysis of DPL-like methods", analysis,
                                       "Per-step AUC, FSM positions and indicator levels (the analyze stage)."))
    other = [_figure(f) for d in plot_dirs or () for f in figs.plot_files(d)]
    if other:
        sections.append(_extra_section("figures", "Figures", other,
                                       "Plots made by the pipeline's plot stages (each with its caption)."))
    report = out_dir / "report.html"
    write_text(report, html_page(title, warnings, notes, sections, details,
                                 any(s.get("has_ci") for s in sections)))
    return [report] + written


def _title(name: str, protocol: dict) -> str:
    tabs = ", ".join(map(str, (protocol.get("table") or {}).get("paper_tables") or []))
    return f"{name} (paper Tab. {tabs})" if tabs else name


def _extra_section(name: str, title: str, figures: list, description: str = "") -> dict:
    return {"name": name, "title": title, "description": description, "blocks": [], "figures": figures,
            "toc": [(f"fig-{f['name']}", f["name"]) for f in figures]}


def _blocks(tables, published, diffs) -> list[dict]:
    """Measured tables in order; under the first frame-level one the differences to the
    published numbers (same columns, so they read straight down), beside it the published
    tables themselves, so a reader sees measured, published and the gap together."""
    out, placed = [], False
    for t in tables:
        block = {"html": html_tables([t]), "diff": "", "side": ""}
        if not placed and (t.level == "frame" or t is tables[-1]) and (published or diffs):
            block.update(diff=html_tables(diffs) if diffs else "", side=html_tables(published) if published else "")
            placed = True
        out.append(block)
    return out


def _has_ci(tables) -> bool:
    return any(c.ci for t in tables for _, cells in t.rows for c in cells)


def _write_tables(out_dir, name, title, warnings, notes, sections, details, tables) -> list[Path]:
    sections[0]["has_ci"] = _has_ci(tables)
    sections[0]["has_sd"] = any(c.sd for t in tables for _, cells in t.rows for c in cells)
    html_path = out_dir / "tables" / f"{name}.html"
    write_text(html_path, html_page(title, warnings, notes, sections, details, _has_ci(tables)))
    tex_path = out_dir / "tables" / f"{name}.tex"
    write_text(tex_path, tex_tables(tables))
    return [html_path, tex_path]
