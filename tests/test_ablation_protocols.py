"""The ablation protocols (paper Tab. 5-9): their rows resolve to params.yaml entries, `run`
trains exactly those, and the table has rows = settings in order, columns = c40, c23."""
from pathlib import Path

import benchmark  # noqa: F401  (torchvision shim)
import numpy as np
import pandas as pd
import pytest

from benchmark import config, pipeline
from benchmark.evaluation.metrics import METRIC_COLUMNS
from benchmark.report.tables import build_tables

ROOT = Path(__file__).resolve().parents[1]
LISTING = [n for n in config.protocol_names(ROOT) if pipeline.protocol_methods(config.load_protocol(n, ROOT))]


def test_the_five_ablations_exist():
    assert {"ablation_components", "ablation_backbone", "ablation_fusion", "ablation_lreg",
            "ablation_clip"} <= set(LISTING)


@pytest.mark.parametrize("name", LISTING)
def test_every_row_is_a_methods_entry(name):
    params = config.load_params(root=ROOT)
    for method in pipeline.protocol_methods(config.load_protocol(name, ROOT)):
        assert pipeline.resolve_method(params, method)[0] in ("baseline", "dpl", "qad", "ucf")


def test_run_uses_the_protocol_rows(monkeypatch):
    from benchmark.pipeline import dag, executor
    monkeypatch.chdir(ROOT)
    insts = dag.instances(config.load_params(root=ROOT))
    picked = executor.select(insts, "ablation_fusion", None)
    # DPL's row is scored once, by cross_quality (same model, test sets and conditions)
    assert picked == {"evaluate-cross_quality-dpl@0", "evaluate-ablation_fusion-dpl_concat@0",
                      "evaluate-ablation_fusion-dpl_attention@0"}
    trains = {n for n in dag.with_upstream(insts, picked) if n.startswith("train-")}
    assert trains == {f"train-{m}-ff_c23@0" for m in ("dpl", "dpl_concat", "dpl_attention")}


def test_the_table_has_the_paper_shape():
    proto = config.load_protocol("ablation_components", ROOT)
    rows = []
    names = pipeline.protocol_methods(proto)
    for i, method in enumerate(reversed(names)):  # out of order on purpose
        for test_set in ("c23", "c40"):
            for subset in ("DF", "all"):
                base = dict.fromkeys(METRIC_COLUMNS, np.nan)
                base.update(protocol="ablation_components", method=method, seed=0, train_set="ff_c23",
                            test_set=test_set, subset=subset, quality=test_set, perturbation="random_jpeg",
                            level="frame", n_real=8, n_fake=8, auc=0.5 + 0.01 * i + (0.1 if test_set == "c23" else 0))
                rows.append(base)
    metrics = pd.DataFrame(rows, columns=METRIC_COLUMNS).astype({"severity": "Int64"})
    (table,) = build_tables(metrics, "ablation_components", proto, {"methods": {}})
    assert table.columns == ["FF++(c40)", "FF++(c23)"]
    assert [label for label, _ in table.rows] == ["Baseline", "w/o VQPL", "w/o FIPL", "w/o Train Stage II",
                                                  "w/o L_REG", "DPL"]
    # DPL was i = 0: 50.00 on c40, 60.00 on c23; the baseline i = 5: 55.00, 65.00
    assert [c.text for c in table.rows[-1][1]] == ["50.00", "60.00"]
    assert [c.text for c in table.rows[0][1]] == ["55.00", "65.00"]


def test_list_shows_the_variants(capsys, monkeypatch):
    from benchmark import cli
    monkeypatch.chdir(ROOT)
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "dpl_wo_vqpl (dpl)" in out and "baseline_resnet (baseline)" in out and "ablation_components" in out
