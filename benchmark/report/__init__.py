"""Reports: paper-shaped tables (HTML + LaTeX) and a self-contained HTML report.

``render_report(metrics_df, provenance, protocols, out_dir) -> list[Path]`` writes

- ``out_dir/report.html``: one page, inline CSS, no scripts or network; a header that warns
  when the dataset is synthetic and/or weights are randomly initialised (numbers then NOT
  comparable to the paper's), one section per protocol, a provenance section;
- ``out_dir/tables/<protocol>.html`` (same page, that protocol only) and
  ``out_dir/tables/<protocol>.tex`` (booktabs tables, one per level) for every protocol with
  rows in ``metrics_df``.

``metrics_df`` is the ``benchmark.metrics.compute_metrics`` frame. ``protocols`` maps a protocol
name to its YAML dict; its ``table`` spec drives the layout (``benchmark.report.tables``), and a
protocol with rows but no entry gets the default spec. Protocols come in ``protocols`` order,
then any other by name. The provenance dict is documented in ``benchmark.report.provenance``;
``provenance["methods"]`` order is the table row order. Same inputs give the same bytes: nothing
time-dependent is written unless ``provenance["generated"]`` says so. The caller writes
metrics.csv / metrics.json (``benchmark.metrics.metrics_json``).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.io import write_text
from benchmark.report import provenance as prov_text
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


def render_report(metrics_df: pd.DataFrame, provenance: dict, protocols: dict,
                  out_dir) -> list[Path]:
    """Write report.html and tables/<protocol>.{html,tex}; return the paths written."""
    out_dir = Path(out_dir)
    provenance = dict(provenance or {})
    if isinstance(provenance.get("methods"), (list, tuple)):  # a bare list of names is fine too
        provenance["methods"] = {str(m): {} for m in provenance["methods"]}
    title = provenance.get("title") or DEFAULT_TITLE
    warnings = prov_text.warnings(provenance)
    notes = [str(n) for n in provenance.get("notes") or []]
    details = prov_text.details(provenance)
    written, sections = [], []
    for name in _order(metrics_df, protocols):
        protocol = protocols.get(name) or {}
        tables = protocol_tables(metrics_df, name, protocol, provenance)
        if not tables:
            continue
        section = {"name": name, "description": protocol.get("description", ""),
                   "html": html_tables(tables)}
        sections.append(section)
        html_path = out_dir / "tables" / f"{name}.html"
        write_text(html_path, html_page(f"{title}: {name}", warnings, notes, [section], details))
        tex_path = out_dir / "tables" / f"{name}.tex"
        write_text(tex_path, tex_tables(tables))
        written += [html_path, tex_path]
    report = out_dir / "report.html"
    write_text(report, html_page(title, warnings, notes, sections, details))
    return [report] + written
