"""The paper's published tables (``results/paper/table<N>.csv``) as report tables.

``paper_tables(numbers, provenance, paper_dir) -> list[Table]``: one ``Table`` of kind
``"paper"`` per listed table number that has a CSV (a missing file is skipped: the page shows
what exists). CSV format (``results/paper/README.md``): ``#`` description lines, then a header;
the first column is a key, ``label`` the paper's row label, other text columns join the row
label, numeric columns are AUC % as printed. Best/second marks are recomputed per column with
``tables.mark_column`` (the same rule as the measured tables). The description lines become the
caption, so the reader always sees these are published numbers.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.report.tables import Cell, Table, mark_column

PAPER_DIR = Path("results/paper")
NOTICE = "Published in the paper, not measured here"


def read_paper_csv(path: Path) -> tuple[list[str], pd.DataFrame]:
    lines = path.read_text().splitlines()
    notes = [ln.lstrip("# ").strip() for ln in lines if ln.startswith("#")]
    body = [ln for ln in lines if ln and not ln.startswith("#")]
    from io import StringIO
    df = pd.read_csv(StringIO("\n".join(body)), dtype=str, keep_default_na=False)
    return notes, df


def _numeric(col: pd.Series) -> bool:
    vals = [v for v in col if v != ""]
    try:
        [float(v) for v in vals]
    except ValueError:
        return False
    return bool(vals)


def paper_table(number: int, path: Path) -> Table:
    notes, df = read_paper_csv(path)
    key = df.columns[0]
    text_cols = [c for c in df.columns[1:] if c != "label" and not _numeric(df[c])]
    value_cols = [c for c in df.columns[1:] if c != "label" and c not in text_cols]
    labels = [" / ".join([r.get("label") or r[key]] + [r[c] for c in text_cols])
              for r in df.to_dict("records")]
    grid = [[Cell(float(v), f"{float(v):.2f}") if v != "" else Cell(None, "–")
             for v in (r[c] for c in value_cols)] for r in df.to_dict("records")]
    for j in range(len(value_cols)):
        mark_column([row[j] for row in grid])
    caption = (notes[0] if notes else f"Paper Tab. {number}").rstrip(".")
    source = path.as_posix() if not path.is_absolute() else path.name
    return Table(protocol=f"paper{number}", level="paper", kind="paper",
                 title=f"Paper Tab. {number} ({NOTICE.lower()})", caption=caption,
                 row_title="Method" if key == "method" else "Setting", groups=[],
                 columns=value_cols, rows=list(zip(labels, grid)),
                 provenance=[NOTICE] + notes[1:] + [f"source: {source}"])


def paper_tables(numbers, paper_dir: Path = PAPER_DIR) -> list[Table]:
    out = []
    for n in numbers or []:
        path = Path(paper_dir) / f"table{n}.csv"
        if path.is_file():
            out.append(paper_table(int(n), path))
    return out
