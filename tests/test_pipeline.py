"""Pipeline wiring that the end-to-end test does not pin down on its own."""
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark import config, pipeline, stamps

ROOT = Path(__file__).resolve().parents[1]


def _scores(method: str) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for test_set in ("c23", "c40"):
        for v, (label, manip) in enumerate([(0, "real"), (0, "real"), (1, "DF"), (1, "F2F"), (1, "FS"), (1, "NT")]):
            for sev in range(4):
                rows.append(dict(protocol="cross_quality", method=method, seed=0, train_set="ff_c23", test_set=test_set,
                                 quality=test_set, video_id=f"{manip}/{v}", frame_idx=0, label=label,
                                 manipulation=manip, perturbation="random_jpeg", severity=sev, jpeg_quality=100,
                                 score=float(rng.random()), vqi=0.5, fii=0.5, vqi_level=1, fii_level=1))
    return pd.DataFrame(rows)


def test_report_covers_the_grid_and_ignores_stale_scores(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "protocols", tmp_path / "protocols")
    shutil.copy(ROOT / "params.yaml", tmp_path)
    monkeypatch.chdir(tmp_path)
    for method in ("dpl", "retired"):
        path = pipeline.scores_path("cross_quality", method, "ff_c23", 0)
        path.parent.mkdir(parents=True)
        _scores(method).to_parquet(path)
    params = config.load_params({"grid.methods": "[dpl]"})
    pipeline.report(params)
    assert set(pd.read_csv("results/metrics.csv")["method"]) == {"dpl"}
    pipeline.report(params, methods=["retired"])  # what `run method=retired` asks for
    assert set(pd.read_csv("results/metrics.csv")["method"]) == {"dpl", "retired"}


def test_stage_keys_chain_through_upstream_stages(monkeypatch):
    monkeypatch.chdir(ROOT)
    params = config.load_params()
    args = {"method": "dpl", "train_set": "ff_c23", "seed": 0}
    base = pipeline.stage_key("train", params, **args)
    assert pipeline.stage_key("train", config.load_params({"methods.dpl.hidden": "8"}), **args) != base
    assert pipeline.stage_key("train", config.load_params({"evaluate.batch_size": "8"}), **args) == base  # not read by train
    assert pipeline.stage_key("train", config.load_params({"synthff.frames": "8"}), **args) != base  # upstream data
    assert [s for s, _ in pipeline.upstream("evaluate", params, protocol="cross_quality", method="dpl", seed=0)] == \
        ["train", "indicators"]
    assert stamps.name("train", args) == "train-dpl-0-ff_c23"


def test_provenance_says_synthetic_from_the_dataset_class_not_its_name(monkeypatch):
    from benchmark import provenance
    monkeypatch.chdir(ROOT)
    assert provenance.collect(config.load_params(), ["dpl"], [0], ["ff_c23"])["dataset"]["synthetic"] is True
    real = config.load_params({"datasets.ff.name": "ffpp"})
    assert provenance.collect(real, ["dpl"], [0], ["ff_c23"])["dataset"]["synthetic"] is False
    assert pipeline.upstream("extract", real, dataset="ff") == []  # a downloaded tree is not generated
    assert pipeline.upstream("extract", config.load_params(), dataset="ff") == [("synthesize", {"dataset": "ff"})]
