"""benchmark.report: paper-shaped tables, marks with ties, LaTeX, provenance, determinism."""
import re
from pathlib import Path

import benchmark  # noqa: F401  (torchvision shim)
import numpy as np
import pandas as pd
import pytest
import yaml

from benchmark.evaluation.metrics import METRIC_COLUMNS
from benchmark.report import render_report
from benchmark.report.tables import Cell, mark_column

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = yaml.safe_load((ROOT / "protocols" / "cross_quality.yaml").read_text())
PROVENANCE = {
    "dataset": {"name": "synthff", "synthetic": True, "root": "data/raw/synthff"},
    "methods": {"uia_vit": {"backbone": "vit_tiny", "weights": "random init"},
                "baseline": {"backbone": "convnext_atto", "weights": "random init"},
                "dpl": {"backbone": "convnext_atto", "weights": "random init"}},
    "indicator": {"backend": "fallback", "binning": "quantile", "k": 5, "model": "ViT-B-32"},
    "seeds": [0], "commit": "abc1234", "generated": None,
}
# headline frame AUCs at c23; the tie cases are commented per column
C23 = {  # method: DF, F2F, FS, NT
    "uia_vit": [0.90, 0.70, 0.60, 0.50],
    "baseline": [0.900004, 0.80, 0.50, 0.50],  # DF shows 90.00 too: tied best with uia_vit
    "dpl": [0.80, 0.80, 0.40, 0.50],           # F2F: tied best with baseline; NT: 3-way tie
}
# Avg: uia_vit 67.50, baseline 67.50, dpl 62.50 -> two bold, dpl underlined


def metrics_frame(rows_c23=C23, methods=None):
    rows = []
    for level in ["frame", "video"]:
        for test_set, shift in [("c40", -0.1), ("c23", 0.0)]:  # out of protocol order on purpose
            for method, aucs in rows_c23.items():
                if methods and method not in methods:
                    continue
                for subset, auc in zip(["DF", "F2F", "FS", "NT", "all"], aucs + [0.6]):
                    base = dict.fromkeys(METRIC_COLUMNS, np.nan)
                    base.update(protocol="cross_quality", method=method, seed=0,
                                train_set="ff_c23", test_set=test_set, subset=subset,
                                quality=test_set, perturbation="random_jpeg", level=level,
                                n_real=8, n_fake=8)
                    for sev in [np.nan, 0, 1, 2, 3]:
                        a = auc + shift if np.isnan(sev) else 0.5
                        rows.append({**base, "severity": sev, "auc": a, "ap": a,
                                     "eer": 1 - a, "acc": a})
    df = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    return df.astype({"severity": "Int64", "n_real": "Int64", "n_fake": "Int64"})


@pytest.fixture()
def report(tmp_path):
    paths = render_report(metrics_frame(), PROVENANCE, {"cross_quality": PROTOCOL}, tmp_path)
    return tmp_path, paths


def html_cells(html, method, table=0):
    section = html.split('<section class="table"')[1 + table]
    row = re.search(rf'<tr><th class="rowhead">{method}</th>(.*?)</tr>', section).group(1)
    return re.findall(r"<td[^>]*>(.*?)</td>", row)


def test_files_and_layout(report):
    out, paths = report
    assert sorted(p.relative_to(out).as_posix() for p in paths) == [
        "report.html", "tables/cross_quality.html", "tables/cross_quality.tex"]
    html = (out / "report.html").read_text()
    assert "<script" not in html and "http" not in html and "<style>" in html
    assert html.count('<section class="table"') == 2  # frame and video
    assert "frame-level AUC" in html and "video-level AUC" in html
    # groups in protocol order, columns in protocol subset order + Avg, rows in provenance order
    assert html.index("Test set c23") < html.index("Test set c40")
    head = re.findall(r"<th>(.*?)</th>", html.split("<thead>")[1].split("</thead>")[0])
    assert head == ["DF", "F2F", "FS", "NT", "Avg"] * 2
    assert html.index(">uia_vit<") < html.index(">baseline<") < html.index(">dpl<")
    assert "NOT comparable to the paper" in html
    assert (out / "tables" / "cross_quality.html").read_text().count("<section class=\"table\"") == 2


def test_best_bold_second_underlined_with_ties(report):
    html = (report[0] / "report.html").read_text()
    assert html_cells(html, "uia_vit")[:5] == [
        "<strong>90.00</strong>", "<u>70.00</u>", "<strong>60.00</strong>",
        "<strong>50.00</strong>", "<strong>67.50</strong>"]
    assert html_cells(html, "baseline")[:5] == [
        "<strong>90.00</strong>", "<strong>80.00</strong>", "<u>50.00</u>",
        "<strong>50.00</strong>", "<strong>67.50</strong>"]
    assert html_cells(html, "dpl")[:5] == [
        "<u>80.00</u>", "<strong>80.00</strong>", "40.00", "<strong>50.00</strong>",
        "<u>62.50</u>"]
    # c40 block: every value shifted by -10 points, same marks
    assert html_cells(html, "dpl")[5:] == [
        "<u>70.00</u>", "<strong>70.00</strong>", "30.00", "<strong>40.00</strong>",
        "<u>52.50</u>"]


def test_latex(report):
    tex = (report[0] / "tables" / "cross_quality.tex").read_text()
    assert tex.count(r"\toprule") == tex.count(r"\midrule") == tex.count(r"\bottomrule") == 2
    assert r"\cmidrule(lr){2-6}\cmidrule(lr){7-11}" in tex
    lines = tex.splitlines()
    assert (r"uia\_vit & \textbf{90.00} & \underline{70.00} & \textbf{60.00} & "
            r"\textbf{50.00} & \textbf{67.50} & \textbf{80.00} & \underline{60.00} & "
            r"\textbf{50.00} & \textbf{40.00} & \textbf{57.50} \\") in lines
    assert (r"dpl & \underline{80.00} & \textbf{80.00} & 40.00 & \textbf{50.00} & "
            r"\underline{62.50} & \underline{70.00} & \textbf{70.00} & 30.00 & "
            r"\textbf{40.00} & \underline{52.50} \\") in lines
    assert "uia_vit" not in tex.replace(r"uia\_vit", "")  # every underscore escaped
    assert r"cross\_quality" in tex and "SynthFF" in tex


def test_provenance_line(report):
    html = (report[0] / "report.html").read_text()
    line = re.search(r'<p class="provenance">(.*?)</p>', html).group(1)
    for needle in ["SynthFF (synthetic stand-in, not FaceForensics++)", "convnext_atto",
                   "vit_tiny", "random init", "backend fallback", "quantile binning",
                   "seeds: 0", "abc1234"]:
        assert needle in line, needle


def test_single_method_only_bold(tmp_path):
    render_report(metrics_frame(methods=["dpl"]), PROVENANCE, {"cross_quality": PROTOCOL},
                  tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert all(c.startswith("<strong>") for c in html_cells(html, "dpl"))
    assert all(c.startswith("<strong>") for c in html_cells(html, "dpl", table=1))
    assert 'class="second"' not in html


def test_mark_column_rules():
    cells = [Cell(v, "") for v in [90.0, None, 90.0, 85.0, 85.0, 80.0]]
    mark_column(cells)
    assert [c.mark for c in cells] == ["best", None, "best", "second", "second", None]
    cells = [Cell(v, "") for v in [10.0, 20.0, 10.0]]
    mark_column(cells, higher_is_better=False)
    assert [c.mark for c in cells] == ["best", "second", "best"]


def test_deterministic_bytes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    render_report(metrics_frame(), PROVENANCE, {"cross_quality": PROTOCOL}, a)
    shuffled = metrics_frame().sample(frac=1, random_state=3)
    render_report(shuffled, PROVENANCE, {"cross_quality": PROTOCOL}, b)
    for rel in ["report.html", "tables/cross_quality.html", "tables/cross_quality.tex"]:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
