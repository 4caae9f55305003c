"""results/cost.csv: settings from class attributes, FLOPs by hand on a toy, honest measurements."""
from __future__ import annotations

import copy
from pathlib import Path

import benchmark  # noqa: F401
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from benchmark.evaluation import cost
from benchmark.method import Method
from methods.baseline import Baseline

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


class Toy(Method):
    def __init__(self, width: int = 1):
        super().__init__()
        self.fc = nn.Linear(3, width)

    def forward(self, batch):
        return {"logit": self.fc(batch["image"].mean((-1, -2))).sum(1)}


@pytest.mark.parametrize("width", [1, 5])
def test_gflops_of_a_linear_layer_by_hand(width):
    batch = cost.dummy_batch(Toy(width), n=3, size=8, k=5)
    # one image: (1 x 3) @ (3 x width) = 3 * width multiply-adds = 6 * width FLOPs; pooling is not counted
    assert cost.count_gflops(Toy(width), batch) == pytest.approx(6 * width / 1e9)


def test_dummy_batch_has_every_capability():
    b = cost.dummy_batch(Toy(), n=4, size=16, k=5)
    assert b["image"].shape == b["image_pair"].shape == (4, 3, 16, 16)
    assert ((b["vqi_level"] >= 1) & (b["vqi_level"] <= 5)).all()
    assert ((b["manipulation"] > 0) == (b["label"] == 1)).all()


@pytest.fixture
def small_params(monkeypatch):
    monkeypatch.setattr(Baseline, "paper_setting", {"backbone": "test_resnet"}, raising=False)
    monkeypatch.setattr(Baseline, "paper_input_size", 32, raising=False)
    params = copy.deepcopy(PARAMS)
    params["methods"]["baseline"] = {"backbone": "resnet10t", "pretrained": None}
    params["grid"]["methods"] = ["baseline"]
    params["cost"] = {"batch_size": 2, "iters": 1}
    return params


def test_cost_table_has_a_default_and_a_paper_row(small_params, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = cost.write_cost_table(small_params)
    table = pd.read_csv(tmp_path / out)
    assert list(table.columns) == cost.COLUMNS
    assert table[["method", "backbone", "setting", "input_size"]].values.tolist() == [
        ["baseline", "resnet10t", "default", 64], ["baseline", "test_resnet", "paper", 32]]
    for backbone, row in zip(["resnet10t", "test_resnet"], table.itertuples()):
        model = Baseline(backbone=backbone)
        assert row.params_m == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6, abs=1e-3)
        assert row.images_per_s > 0 and row.train_peak_mb > 0
    assert table["gflops"].iloc[0] > table["gflops"].iloc[1] > 0
    assert not list(tmp_path.glob("results/.cost*"))  # no temporary left behind


def test_conv_flops_scale_with_the_input_area(small_params):
    model = Baseline(backbone="test_resnet")
    big = cost.count_gflops(model, cost.dummy_batch(model, 1, 64, 5))
    small = cost.count_gflops(model, cost.dummy_batch(model, 1, 32, 5))
    assert big / small == pytest.approx(4, rel=0.01)  # every conv output shrinks by 4; the head is tiny


def test_training_memory_grows_with_the_batch():
    kwargs = {"backbone": "test_resnet", "pretrained": None}
    small = cost.train_peak_mb("baseline", kwargs, 64, 2, 5)
    large = cost.train_peak_mb("baseline", kwargs, 64, 64, 5)
    assert 0 < small < large


def test_a_method_without_paper_attributes_gets_its_default_row_only(monkeypatch, capsys):
    monkeypatch.delattr(Baseline, "paper_setting")
    rows = cost.settings(PARAMS, "baseline")
    assert [r[0] for r in rows] == ["default"]
    assert "declares no paper_setting" in capsys.readouterr().err


def test_every_grid_method_declares_its_paper_setting():
    for name in PARAMS["grid"]["methods"]:
        rows = cost.settings(PARAMS, name)
        assert [r[0] for r in rows] == ["default", "paper"], name
        assert rows[1][1]["backbone"] != rows[0][1]["backbone"] or rows[1][2] != rows[0][2], name


def test_cost_settings_choose_the_rows():
    params = copy.deepcopy(PARAMS)
    params["cost"]["settings"] = ["default"]
    assert [r[0] for r in cost.settings(params, "f3net")] == ["default"]
    params["cost"]["settings"] = ["paper"]
    assert [(r[0], r[1]["backbone"], r[2]) for r in cost.settings(params, "f3net")] == [("paper", "legacy_xception", 299)]
