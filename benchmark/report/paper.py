"""The paper's published tables (``results/paper/table<N>.csv``) as report tables.

``paper_tables(numbers, provenance, paper_dir) -> list[Table]``: one ``Table`` of kind
``"paper"`` per listed table number that has a CSV (a missing file is skipped: the page shows
what exists). CSV format (``results/paper/README.md``): ``#`` description lines, then a header;
the first column is a key, ``label`` the paper's row label, other text columns join the row
label, numeric columns are AUC % as printed. Best/second marks are recomputed per column with
``tables.mark_column`` (the same rule as the measured tables). The description lines become the
caption, so the reader always sees these are published numbers.

``difference_table(measured, protocol, paper_dir) -> Table | None``: the measured table minus
the published numbers, cell by cell, where the protocol maps them (``table.paper``: a list of
``{table: N, group: <column-group value>}``; a row's published key is its ``methods:`` entry's
``paper`` key, else the row's own value, e.g. the method name; a column is matched by its value,
``DF`` … ``Avg`` or a test set name). Cells without a published number stay empty.
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


def _published(spec: list, paper_dir: Path) -> dict[tuple[str, str, str], float]:
    """{(group, row key, column): published AUC %} from the protocol's ``table.paper`` list."""
    out = {}
    for entry in spec or []:
        path = Path(paper_dir) / f"table{int(entry['table'])}.csv"
        if not path.is_file():
            continue
        _, df = read_paper_csv(path)
        key = df.columns[0]
        for r in df.to_dict("records"):
            for c, v in r.items():
                if c not in (key, "label") and v not in ("", None):
                    try:
                        out[(str(entry.get("group", "")), str(r[key]), str(c))] = float(v)
                    except ValueError:
                        pass  # a text column (e.g. Tab. 3's `train`)
    return out


def difference_table(measured: Table, protocol: dict, paper_dir: Path = PAPER_DIR) -> Table | None:
    spec = (protocol.get("table") or {}).get("paper")
    published = _published(spec, paper_dir)
    if not published or not measured.row_keys:
        return None
    keys = {str(m["name"]): str(m.get("paper", m["name"])) for m in protocol.get("methods") or [] if isinstance(m, dict)}
    rows, found = [], False
    for (label, cells), row in zip(measured.rows, measured.row_keys):
        out = []
        for cell, (group, col) in zip(cells, measured.col_keys):
            ref = published.get((group, keys.get(row, row), col), published.get(("", keys.get(row, row), col)))
            if ref is None or cell.value is None:
                out.append(Cell(None, "–"))
            else:
                d = round(cell.value - ref, 2)
                out.append(Cell(d, f"{d:+.2f}".replace("-", "−")))
                found = True
        rows.append((label, out))
    if not found:
        return None
    tabs = ", ".join(str(e["table"]) for e in spec)
    return Table(protocol=measured.protocol, level=measured.level, kind="diff",
                 title=f"Measured minus published (AUC points), paper Tab. {tabs}",
                 caption=f"{measured.title} minus the paper's numbers; not comparable while the data are synthetic",
                 row_title=measured.row_title, groups=measured.groups, columns=measured.columns, rows=rows,
                 split=measured.split, provenance=[f"{NOTICE} (the published side)"],
                 row_keys=measured.row_keys, col_keys=measured.col_keys)
