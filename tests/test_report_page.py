"""The full page: paper tables beside measured ones, CIs, cost/significance tables, figures;
it opens in headless Chromium without console errors and every .tex compiles with pdflatex."""
import base64
import sys
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from benchmark.errors import UserError
from benchmark.evaluation.metrics import METRIC_COLUMNS
from benchmark.report import render_report
from benchmark.report.extras import cost_table
from benchmark.report.paper import paper_table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # tests/_chromium.py
PAPER = ROOT / "results" / "paper"
PROTOCOLS = {
    "cross_quality": yaml.safe_load((ROOT / "protocols" / "cross_quality.yaml").read_text()),
    "robust": {"description": "robustness-shaped", "levels": ["frame"],
               "table": {"rows": "method", "column_groups": None, "columns": "perturbation"},
               "figures": [{"kind": "severity_curves"}]},
    "ablate": {"description": "ablation-shaped", "levels": ["frame"],
               "methods": [{"name": "dpl", "label": "DPL"}, {"name": "baseline", "label": "Baseline"}],
               "table": {"rows": "method", "column_groups": None, "columns": "test_set",
                         "paper_tables": [5]},
               "figures": [{"kind": "bars"}]},
}
PROVENANCE = {"dataset": {"name": "synthff", "synthetic": True},
              "methods": {"baseline": {"backbone": "resnet10t", "weights": "random init"},
                          "dpl": {"backbone": "resnet10t", "weights": "random init"}},
              "seeds": [0], "commit": "abc1234",
              "dvc_lock": {"train": ["0123456789abcdef0123"], "report": []}}


def _row(**kw):
    base = dict.fromkeys(METRIC_COLUMNS, np.nan)
    base.update(seed=0, train_set="ff_c23", level="frame", n_real=8, n_fake=8, **kw)
    a = base["auc"]
    base.update(ap=a, eer=1 - a, acc=a)
    return base


def metrics() -> pd.DataFrame:
    rows = []
    for i, m in enumerate(["baseline", "dpl"]):
        for t, q in [("c23", 0.0), ("c40", -0.1)]:
            for j, s in enumerate(["DF", "F2F", "FS", "NT", "all"]):
                a = 0.7 + 0.05 * i + q + 0.01 * j
                rows.append(_row(protocol="cross_quality", method=m, test_set=t, quality=t,
                                 subset=s, perturbation="random_jpeg", auc=a,
                                 auc_ci_low=a - 0.04, auc_ci_high=a + 0.03))
            rows.append(_row(protocol="ablate", method=m, test_set=t, quality=t, subset="all",
                             perturbation="random_jpeg", auc=0.8 + 0.02 * i + q))
        for p in ["CS", "GB"]:
            for sev in range(1, 6):
                rows.append(_row(protocol="robust", method=m, test_set="c23", quality="c23",
                                 subset="all", perturbation=p, severity=sev,
                                 auc=0.9 - 0.05 * sev + 0.02 * i))
            rows.append(_row(protocol="robust", method=m, test_set="c23", quality="c23",
                             subset="all", perturbation=p, auc=0.75 + 0.02 * i))  # headline
    return pd.DataFrame(rows, columns=METRIC_COLUMNS).astype({"severity": "Int64"})


def extras(tmp: Path) -> dict:
    cost = tmp / "cost.csv"
    pd.DataFrame([
        dict(method="baseline", backbone="resnet10t", setting="default", input_size=64,
             params_m=4.93, gflops=0.21, images_per_s=410.5, train_peak_mb=310),
        dict(method="dpl", backbone="resnet10t", setting="default", input_size=64,
             params_m=5.41, gflops=0.21, images_per_s=380.2, train_peak_mb=350),
        dict(method="dpl", backbone="convnext_tiny", setting="paper", input_size=224,
             params_m=28.9, gflops=4.47, images_per_s=21.0, train_peak_mb=2900),
    ]).to_csv(cost, index=False)
    sig = tmp / "significance.csv"
    pd.DataFrame([dict(protocol="cross_quality", test_set="c40", subset="all", level="video",
                       method="dpl", reference_method="baseline", auc_method=0.81,
                       auc_reference=0.77, z=1.96, p_value=0.05, p_holm=0.15,
                       test="delong_videos")]).to_csv(sig, index=False)
    plots = tmp / "plots"
    plots.mkdir()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(plots / "histogram.png")
    (plots / "histogram.txt").write_text("VQI level histogram (made by another stage)\n")
    return dict(paper_dir=PAPER, figure_dir=tmp / "figures", plot_dirs=[plots],
                cost_csv=cost, significance_csv=sig)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("page")
    paths = render_report(metrics(), PROVENANCE, PROTOCOLS, tmp / "out", **extras(tmp))
    return tmp / "out", paths


def test_files(page):
    out, paths = page
    rel = sorted(p.relative_to(out).as_posix() if p.is_relative_to(out) else p.name for p in paths)
    for name in ["report.html", "tables/cost.tex", "tables/significance.html",
                 "tables/cross_quality.tex", "tables/ablate.tex", "tables/robust.tex"]:
        assert name in rel, name
    figs = sorted(p.name for p in (out.parent / "figures").iterdir())
    assert figs == ["ablate_bars.png", "ablate_bars.svg", "ablate_bars.txt",
                    "cross_quality_dots.png", "cross_quality_dots.svg", "cross_quality_dots.txt",
                    "robust_severity_curves.png", "robust_severity_curves.svg",
                    "robust_severity_curves.txt"]  # no ROC figure: no scores were given


def test_paper_tables_beside_measured_and_never_mixed(page):
    html = (page[0] / "report.html").read_text()
    cq = _section(html, "cross_quality")
    measured, published = cq.split('<div class="published">')
    measured, diff = measured.split('<div class="diff">')
    assert measured.count('data-kind="measured"') == 1 and 'data-kind="paper"' not in measured
    assert published.count('data-kind="paper"') == 2 and 'data-kind="measured"' not in published
    assert "Paper Tab. 1" in published and "Paper Tab. 2" in published
    assert "not measured here" in published
    # Tab. 1 DPL row with marks recomputed: DF, F2F, NT, Avg best; FS second (QAD 97.11 best)
    row = re.search(r'<th class="rowhead">DPL \(ACCV&#39;24\)</th>(.*?)</tr>', published).group(1)
    assert re.findall(r"<td[^>]*>(.*?)</td>", row) == [
        "<strong>98.14</strong>", "<strong>95.16</strong>", "<u>96.63</u>",
        "<strong>87.70</strong>", "<strong>94.41</strong>"]
    assert "Paper Tab. 5" in _section(html, "ablate")
    assert diff.count('data-kind="diff"') == 1 and "Measured minus published" in diff


def _section(html: str, name: str) -> str:
    return html.split(f'<section class="protocol" id="{name}">')[1].split('<section class="protocol"')[0]


def test_difference_to_the_published_numbers():
    """Measured minus published, cell by cell: dpl c23 DF frame 0.75 -> 75.00 vs Tab. 1's 98.14."""
    from benchmark.report import protocol_tables
    from benchmark.report.paper import difference_table
    frame = protocol_tables(metrics(), "cross_quality", PROTOCOLS["cross_quality"], PROVENANCE)[0]
    diff = difference_table(frame, PROTOCOLS["cross_quality"], PAPER)
    row = dict(diff.rows)["dpl"]
    assert [c.text for c in row[:5]] == ["−23.14", "−19.16", "−19.63", "−9.70", "−17.91"]  # Avg: 76.50 - 94.41
    assert diff.kind == "diff" and diff.columns == frame.columns
    assert all(c.text == "–" for c in dict(diff.rows)["baseline"])  # Tab. 1/2 print no baseline row
    ablate = protocol_tables(metrics(), "ablate", PROTOCOLS["ablate"], PROVENANCE)[0]
    assert difference_table(ablate, PROTOCOLS["ablate"], PAPER) is None  # the protocol maps no published cell


def test_paper_table3_row_labels_and_blank_avg():
    t = paper_table(3, PAPER / "table3.csv")
    assert t.columns == ["NT", "F2F", "FS", "DF", "Avg"]
    assert [lab for lab, _ in t.rows][:2] == ["QAD (ICCV'23) / NT", "QAD (ICCV'23) / F2F"]
    assert t.rows[1][1][4].text == "–" and t.rows[1][1][4].mark is None
    avg = [cells[4] for _, cells in t.rows if cells[4].value is not None]
    assert [c.value for c in avg] == [68.11, 66.56, 68.97]
    assert [c.mark for c in avg] == ["second", None, "best"]


def test_every_paper_csv_parses():
    for n in range(1, 10):
        t = paper_table(n, PAPER / f"table{n}.csv")
        assert t.rows and all(len(cells) == len(t.columns) for _, cells in t.rows), n
        assert t.kind == "paper" and "not measured here" in t.provenance[0]


def test_ci_on_hover_and_toggle(page):
    html = (page[0] / "report.html").read_text()
    assert 'id="show-ci"' in html and "#show-ci:checked ~ main .ci" in html
    cq = _section(html, "cross_quality").split('<div class="diff">')[0]
    # baseline c23 DF frame: auc 0.70, CI 0.66-0.73
    assert 'title="95 % CI 66.00–73.00"' in cq and '<span class="ci">95 % CI 66.00–73.00</span>' in cq
    ablate = _section(html, "ablate")
    assert "95 % CI" not in ablate.split('<div class="published">')[0]  # no bounds, no CI


def test_cost_table_marks_lower_is_better_except_throughput(page):
    t = cost_table(page[0].parent / "cost.csv")
    cols = {c: j for j, c in enumerate(t.columns)}
    marks = lambda c: [cells[cols[c]].mark for _, cells in t.rows]  # noqa: E731
    assert marks("Params (M)") == ["best", "second", None]
    assert marks("Images/s") == ["best", "second", None]
    assert marks("GFLOPs") == ["best", "best", "second"]  # tie at 0.21
    assert marks("Backbone") == [None, None, None]
    (page[0].parent / "bad.csv").write_text("method,setting\nx,y\n")
    with pytest.raises(UserError, match="lacks columns"):
        cost_table(page[0].parent / "bad.csv")


def test_figures_embedded_inline(page):
    html = (page[0] / "report.html").read_text()
    uris = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    assert len(uris) == 4  # severity curves, 2 x bars, the other stage's histogram
    for u in uris:
        Image.open(io.BytesIO(base64.b64decode(u))).verify()
    assert "VQI level histogram (made by another stage)" in html
    assert "shaped like paper Fig. 7" in html


def test_deterministic_with_figures(tmp_path):
    outs = []
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        df = metrics() if name == "a" else metrics().sample(frac=1, random_state=5)
        render_report(df, PROVENANCE, PROTOCOLS, d / "out", **extras(d))
        outs.append(d)
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file()
                   and p.suffix in {".html", ".tex", ".png", ".svg"})
    assert len(files) >= 12
    for rel in files:
        assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes(), rel


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian: apt-get install chromium)")
def test_opens_in_headless_chromium(page, tmp_path):
    report = page[0] / "report.html"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
           "--v=0"]
    r = subprocess.run(cmd + ["--dump-dom", report.as_uri()], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    console = [ln for ln in r.stderr.splitlines() if "CONSOLE" in ln]
    assert console == []
    dom = r.stdout
    html = report.read_text()
    assert dom.count("<table") == html.count("<table") == 9  # 8 + the difference to Tab. 1/2
    assert dom.count("<img ") == html.count("<img ") == 4
    shot = tmp_path / "shot.png"
    r = subprocess.run(cmd + [f"--screenshot={shot}", "--window-size=1400,2400", report.as_uri()],
                       capture_output=True, text=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("L"))
    assert img.std() > 10  # something was drawn


PDFLATEX = shutil.which("pdflatex")


@pytest.mark.skipif(PDFLATEX is None, reason="pdflatex not installed (Debian: texlive-latex-base texlive-latex-recommended)")
def test_every_tex_compiles(page, tmp_path):
    texs = sorted((page[0] / "tables").glob("*.tex"))
    assert len(texs) == 5
    for tex in texs:
        doc = tmp_path / f"{tex.stem}_doc.tex"
        doc.write_text("\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n"
                       "\\usepackage[margin=1cm,landscape]{geometry}\n\\begin{document}\n"
                       f"\\input{{{tex.as_posix()}}}\n\\end{{document}}\n")
        r = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", doc.name],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (tex.name, r.stdout[-1500:])
        assert (tmp_path / f"{tex.stem}_doc.pdf").stat().st_size > 1000


def test_provenance_block(page):
    html = (page[0] / "report.html").read_text()
    block = html.split('<h2 id="provenance">')[1]
    for needle in ["<dt>dataset</dt><dd>SynthFF (synthetic stand-in, not FaceForensics++)</dd>",
                   "<dt>method dpl</dt><dd>resnet10t (random init)</dd>",
                   "<dt>seeds</dt><dd>0</dd>", "<dt>commit</dt><dd>abc1234</dd>",
                   "<dt>dvc.lock</dt><dd>report: -; train: 01234567</dd>"]:
        assert needle in block, needle


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian: apt-get install chromium)")
@pytest.mark.parametrize("width", [1024, 1400, 1920])
def test_nothing_overlaps_at_common_widths(page, tmp_path, width):
    """Element boxes from headless Chromium: no two blocks overlap, nothing wider than the window."""
    from _chromium import probe
    got = probe(page[0] / "report.html", width, tmp_path)
    assert got["n"] > 50 and got["overlaps"] == [], got["overlaps"][:5]
    assert got["width"] <= got["viewport"]


def test_contents_link_every_section_and_table(page):
    html = (page[0] / "report.html").read_text()
    toc = html.split('<nav class="toc" id="contents">')[1].split("</nav>")[0]
    sections = re.findall(r'<section class="protocol" id="([^"]+)">', html)
    assert sections == ["cross_quality", "robust", "ablate", "cost", "significance", "figures"]
    assert all(f'href="#{s}"' in toc for s in sections) and 'href="#provenance"' in toc
    for anchor in re.findall(r'<section class="table" data-kind="measured" id="([^"]+)">', html):
        assert f'href="#{anchor}"' in toc, anchor
