"""Tables from other result files: the cost table and the significance tests (both optional).

``cost_table(path) -> Table | None`` reads ``results/cost.csv`` (method, backbone, setting,
input_size, params_m, gflops, images_per_s, train_peak_mb[, device]): one row per method and setting;
best/second marks per numeric column, lower is better except images/s.
``significance_table(path) -> Table | None`` reads ``results/significance.csv`` (protocol,
test_set, subset, level, method, reference_method, auc_method, auc_reference, z, p_value,
p_holm, test): the headline rows (a block's mean over its conditions, or its only condition),
with the raw and the Holm-corrected p-value and the test that gave them, unmarked. A file that
is absent gives None; one missing a column is a UserError.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.errors import UserError
from benchmark.report.tables import Cell, Table, mark_column

# column -> (header, decimals, higher is better; None = text, not marked)
COST_COLUMNS = {
    "backbone": ("Backbone", None, None), "input_size": ("Input (px)", 0, None),
    "params_m": ("Params (M)", 2, False), "gflops": ("GFLOPs", 2, False),
    "images_per_s": ("Images/s", 1, True), "train_peak_mb": ("Train peak (MB)", 0, False),
}
SIG_COLUMNS = ["protocol", "test_set", "subset", "level", "method", "reference_method",
               "auc_method", "auc_reference", "z", "p_value", "p_holm", "test"]
TEST_NAMES = {"bootstrap_videos": "bootstrap (videos)", "delong_videos": "DeLong (videos)"}


def _read(path: Path, need: list[str]) -> pd.DataFrame | None:
    path = Path(path)
    if not path.is_file():
        return None
    df = pd.read_csv(path)
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise UserError(f"{path} lacks columns {', '.join(missing)}; regenerate it")
    return df


def _num(v, decimals: int) -> Cell:
    if v is None or pd.isna(v):
        return Cell(None, "–")
    shown = round(float(v), decimals)
    return Cell(shown, f"{shown:.{decimals}f}")


def cost_table(path) -> Table | None:
    df = _read(path, ["method", "setting", *COST_COLUMNS])
    if df is None or df.empty:
        return None
    rows = []
    for r in df.to_dict("records"):
        cells = [Cell(None, str(r[c])) if d is None else _num(r[c], d)
                 for c, (_, d, _) in COST_COLUMNS.items()]
        rows.append((f"{r['method']} ({r['setting']})", cells))
    for j, (_, d, higher) in enumerate(COST_COLUMNS.values()):
        if higher is not None:
            mark_column([cells[j] for _, cells in rows], higher)
    return Table(protocol="cost", level="cost", kind="extra", title="Cost per method",
                 caption=f"From {Path(path).name}; lower is better except images/s",
                 row_title="Method (setting)", groups=[],
                 columns=[h for h, _, _ in COST_COLUMNS.values()], rows=rows,
                 provenance=[f"source: {Path(path).name}"]
                 + ([f"measured on: {', '.join(sorted(df['device'].astype(str).unique()))}"] if "device" in df else []))


def _headlines(df: pd.DataFrame) -> pd.DataFrame:
    """A block's headline row (empty severity), or its rows when it has a single condition."""
    if "severity" not in df.columns:
        return df
    keys = [c for c in ("protocol", "seed", "train_set", "test_set", "quality", "perturbation", "subset",
                        "level", "method") if c in df.columns]
    has_head = df["severity"].isna().groupby([df[k].astype(str) for k in keys]).transform("any")
    return df[df["severity"].isna() | ~has_head]


def _p(v) -> Cell:
    return Cell(None, "–" if pd.isna(v) else f"{v:.3g}")


def significance_table(path) -> Table | None:
    df = _read(path, SIG_COLUMNS)
    if df is None or df.empty:
        return None
    rows = []
    for r in _headlines(df).to_dict("records"):
        cells = [Cell(None, str(r[c])) for c in ("protocol", "test_set", "subset", "level")]
        cells += [_num(100 * r["auc_method"], 2), _num(100 * r["auc_reference"], 2),
                  _num(r["z"], 2), _p(r["p_value"]), _p(r["p_holm"]),
                  Cell(None, TEST_NAMES.get(str(r["test"]), str(r["test"])))]
        rows.append((f"{r['method']} vs {r['reference_method']}", cells))
    return Table(protocol="significance", level="tests", kind="extra",
                 title="Significance of AUC differences",
                 caption=f"From {Path(path).name}: paired tests on the same images, frame level by a "
                         "bootstrap resampling videos, video level by DeLong over video scores (a video's "
                         "frames are not independent); p (Holm) corrects across the comparisons of one "
                         "table (protocol, seed, train set, perturbation, level)",
                 row_title="Comparison", groups=[],
                 columns=["Protocol", "Test set", "Subset", "Level", "AUC", "AUC (reference)",
                          "z", "p", "p (Holm)", "Test"], rows=rows, provenance=[f"source: {Path(path).name}"])
