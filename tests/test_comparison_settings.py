"""What a comparison with DPL holds fixed: the baseline's loss, the setting line each table's
provenance shows, the ablation_reading rows, and method-fixed training options in the pipeline."""
from pathlib import Path

import benchmark  # noqa: F401  (torchvision shim)
import pytest
import torch

from benchmark import config, pipeline
from benchmark.errors import UserError
from benchmark.report.provenance_text import method_text, table_parts
from methods import _dpl_readings as readings
from methods.baseline import Baseline

ROOT = Path(__file__).resolve().parents[1]


def test_baseline_loss_is_bce_or_the_focal_loss_by_hand():
    out, b = {"logit": torch.tensor([0.0, 2.0, -1.0])}, {"label": torch.tensor([1, 0, 0])}
    # the hand values of tests/test_dpl.py: BCE 1.044446, focal (gamma 2) 0.615341
    assert Baseline(backbone="resnet10t").loss(out, b)["loss"].item() == pytest.approx(1.044446, abs=1e-5)
    focal = Baseline(backbone="resnet10t", loss="focal")
    assert focal.loss(out, b)["loss"].item() == pytest.approx(0.615341, abs=1e-5)
    assert Baseline(backbone="resnet10t", loss="focal", focal_gamma=0.0).loss(out, b)["loss"].item() == \
        pytest.approx(1.044446, abs=1e-5)
    assert focal.provenance()["setting"] == "loss focal (gamma 2)"
    assert Baseline(backbone="resnet10t").provenance()["setting"] == "loss bce"
    with pytest.raises(UserError, match="methods.baseline.loss='mse'"):
        Baseline(backbone="resnet10t", loss="mse")


def test_every_table_names_each_rows_setting():
    info = {"backbone": "resnet10t", "weights": "random init", "setting": "reading paper, views=single"}
    assert method_text("dpl", info) == "dpl: resnet10t (random init; reading paper, views=single)"
    assert method_text("x", {"backbone": "b", "weights": "random init"}) == "x: b (random init)"
    line = " · ".join(table_parts({"methods": {"dpl": info}}, ["dpl"]))
    assert "reading paper" in line


def test_ablation_reading_switches_every_difference_with_a_run_cost():
    """Each reading option is set to the text's reading in some row (test-time windows only
    matter without stage II, which no row of this protocol drops)."""
    params = config.load_params(root=ROOT)
    rows = pipeline.protocol_methods(config.load_protocol("ablation_reading", ROOT))
    assert rows[:2] == ["baseline", "baseline_focal"] and {"dpl", "dpl_paper"} <= set(rows)
    switched = set()
    for name in rows:
        root, opts = pipeline.resolve_method(params, name)
        if root != "dpl" or opts.get("reading") == "paper":
            continue
        given = {k: v for k, v in opts.items() if k in readings.KEYS and v is not None}
        assert all(v == readings.READINGS["paper"][k] for k, v in given.items()), name  # the text's reading
        assert len(given) == 0 or name != "dpl"
        switched |= set(given)
    assert switched == set(readings.KEYS) - {"eval_positions"}


def test_options_a_method_fixes_reach_the_engine(monkeypatch, tmp_path):
    """DPL's release reading trains on all four JPEG versions in balanced batches whatever
    train.views and train.sampler say."""
    from benchmark import engine
    from benchmark.data.views import JPEGViews
    from benchmark.pipeline import stages
    seen = {}
    monkeypatch.setattr(engine, "train", lambda model, data, out, cfg, seed, **kw: seen.update(data=data, cfg=cfg, **kw) or {})
    monkeypatch.setattr(stages.inputs, "manifest", lambda *a: _rows())
    monkeypatch.setattr(stages.inputs, "indicator", lambda *a: type("I", (), {"levels": None})())
    monkeypatch.setattr(stages, "_publish", lambda *a: None)  # engine.train is stubbed: nothing to move
    monkeypatch.chdir(ROOT)
    params = config.load_params({"methods.dpl.hidden": "8", "methods.dpl.policy_hidden": "4",
                                 "train.sampler": "uniform"}, root=ROOT)
    stages.train(params, method="dpl", train_set="ff_c23", seed=0)
    assert isinstance(seen["data"], JPEGViews) and seen["data"].frames.augment is None
    assert seen["cfg"]["views"] == "all_jpeg" and seen["val_data"] is not None
    assert seen["cfg"]["sampler"] == "balanced" and len(seen["data"].rows) == len(seen["data"])
    stages.train(params, method="dpl_r_views", train_set="ff_c23", seed=0)
    assert not isinstance(seen["data"], JPEGViews) and seen["data"].augment is not None  # random JPEG
    assert seen["cfg"]["sampler"] == "uniform"  # train.sampler's
    stages.train(config.load_params({"train.val": "null"}, root=ROOT), method="baseline", train_set="ff_c23", seed=0)
    assert seen["val_data"] is None


def _rows():
    import pandas as pd
    return pd.DataFrame({"video_id": ["real/000", "DF/000_001"], "frame_idx": [0, 0], "label": [0, 1],
                         "manipulation": ["real", "DF"], "quality": ["c23", "c23"], "split": ["train", "train"],
                         "path": ["a.tar", "a.tar"], "offset": [0, 512], "nbytes": [1, 1], "crc32": [0, 0]})


def test_baseline_vit_is_uia_vits_own_vit_under_the_baselines_head():
    """The row UIA-ViT's caveat points to must hold UIA-ViT's ViT, whatever params.yaml sets."""
    params = config.load_params(root=ROOT)
    _, vit = pipeline.resolve_method(params, "baseline_vit")
    _, uia = pipeline.resolve_method(params, "uia_vit")
    assert vit["backbone"] == uia["backbone"] and vit["pretrained"] == uia["pretrained"]
    # UIA-ViT always builds its ViT with dynamic_img_size (methods/uia_vit.py)
    assert vit["backbone_kwargs"] == {**{k: uia[k] for k in ("img_size", "patch_size", "depth")}, "dynamic_img_size": True}
    assert pipeline.train_cfg(params, "baseline_vit")["optimizer"] == pipeline.train_cfg(params, "uia_vit")["optimizer"]


def _entry_params():
    train = {"epochs": 10, "batch_size": 32, "optimizer": {"type": "Adam", "lr": 1e-3, "weight_decay": 0.0},
             "param_scheduler": [], "clip_grad": None, "recipe": "shared", "recipe_epochs": "shared"}
    methods = {"baseline": {"backbone": "test_resnet"},
               "slow": {"base": "baseline", "train": {"optimizer": {"lr": 1e-4}, "batch_size": 16}},
               "slower": {"base": "slow", "train": {"optimizer": {"lr": 1e-5}}},
               "sgd": {"base": "baseline", "train": {"optimizer": {"type": "SGD", "lr": 0.1, "momentum": 0.9}}}}
    return {"train": train, "methods": methods}


def test_an_entrys_train_keys_replace_params_train_for_that_entry_only():
    params = _entry_params()
    assert pipeline.train_cfg(params, "baseline") == params["train"]
    slow = pipeline.train_cfg(params, "slow")
    assert slow["optimizer"] == {"type": "Adam", "lr": 1e-4, "weight_decay": 0.0} and slow["batch_size"] == 16
    slower = pipeline.train_cfg(params, "slower")          # its own lr wins, the base's batch size stays
    assert slower["optimizer"]["lr"] == 1e-5 and slower["batch_size"] == 16
    assert pipeline.train_cfg(params, "sgd")["optimizer"] == {"type": "SGD", "lr": 0.1, "momentum": 0.9,
                                                              "weight_decay": 0.0}
    assert params["train"]["optimizer"]["lr"] == 1e-3     # params untouched
    assert pipeline.resolve_method(params, "slow") == ("baseline", {"backbone": "test_resnet"})  # not a class option
    assert pipeline.specs.reused_stage(params, "slow", "baseline") is None   # same class options, other training


def test_an_entrys_train_key_outside_the_recipe_is_one_line():
    params = _entry_params()
    params["methods"]["slow"]["train"] = {"epochs": 3}
    with pytest.raises(UserError, match=r"methods.slow.train: \['epochs'\] cannot be set per method"):
        pipeline.train_cfg(params, "slower")


def test_uia_vits_lr_under_the_shared_recipe_and_the_originals_under_its_own():
    from benchmark.engine import optim
    params = config.load_params(root=ROOT)
    model = pipeline.build_method(params, "uia_vit")
    cfg = pipeline.train_cfg(params, "uia_vit")
    shared = optim.stage_recipe(model, "train", cfg)
    assert shared["optimizer"]["lr"] == params["methods"]["uia_vit"]["train"]["optimizer"]["lr"]
    assert shared["batch_size"] == params["train"]["batch_size"] and shared["source"] == "shared"
    own = optim.stage_recipe(model, "train", {**cfg, "recipe": "own"})
    assert own["optimizer"]["lr"] == 3e-5 and own["batch_size"] == 96 and own["source"] == "own"
