"""Contract tests run on EVERY registered method, each built from its params.yaml defaults.

A newly registered method is covered automatically. The training-side tests put each method in
the middle of a training run first (``Method.on_train_iter``), where every part of its objective
is active (e.g. UIA-ViT's patch-consistency loss starts with the second epoch). Each method's own
recipe (``Method.recipe``/``stage_recipe``, used under ``train.recipe: own``) must build with
mmengine and train. The batch gives what ``requires`` asks
for among the capabilities this file knows (KNOWN_CAPABILITIES: indicator levels, a JPEG-
degraded copy of each image as its quality pair, and a manipulation label consistent with
the fake label); a method asking for more is skipped with that reason until ``make_batch``
learns to provide it.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import benchmark  # noqa: F401  (installs the torchvision shim before timm imports)
import pytest
import torch
import yaml

from mmengine.optim import OptimWrapper

from benchmark import registry
from benchmark.pipeline.specs import resolve_method
from benchmark.io import load_tensors, save_tensors
from benchmark.data.jpeg import jpeg
from benchmark.registry import METHODS

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
SIZE = int(PARAMS["extract"]["size"])  # the model input size of the default grid
K = int(PARAMS["indicators"]["k"])
KNOWN_CAPABILITIES = {"indicator_levels", "quality_pair", "manipulation_label"}
PAIR_JPEG_QUALITY = 20  # the test's "other quality" of a frame


def method_names() -> list[str]:
    try:
        return registry.choices(METHODS)
    except ModuleNotFoundError as e:  # a sibling package of load_all() not written yet
        if e.name not in registry._PACKAGES:
            raise
        import methods

        for info in pkgutil.iter_modules(methods.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"methods.{info.name}")
        return sorted(METHODS.module_dict)


NAMES = method_names()


def build(name: str, seed: int = 0):
    assert name in PARAMS["methods"], f"params.yaml has no methods.{name} section"
    torch.manual_seed(seed)
    return METHODS.get(name)(**resolve_method(PARAMS, name)[1])


def make_batch(model, n: int = 4, seed: int = 0) -> dict:
    missing = set(model.requires) - KNOWN_CAPABILITIES
    if missing:
        pytest.skip(f"test batch cannot provide capabilities {sorted(missing)}")
    g = torch.Generator().manual_seed(seed)
    batch = {"image": torch.rand(n, 3, SIZE, SIZE, generator=g), "label": torch.arange(n) % 2}
    if "indicator_levels" in model.requires:
        batch["vqi_level"] = torch.randint(1, K + 1, (n,), generator=g)
        batch["fii_level"] = torch.randint(1, K + 1, (n,), generator=g)
        batch["vqi_level"][0], batch["fii_level"][1] = K, K  # the longest sequence is exercised
    if "quality_pair" in model.requires:
        batch["image_pair"] = jpeg_copy(batch["image"], PAIR_JPEG_QUALITY)
    if "manipulation_label" in model.requires:  # 0 = real; fakes cycle through 1..4 (DF, F2F, FS, NT)
        batch["manipulation"] = torch.where(batch["label"] == 1, torch.arange(n) % 4 + 1, 0)
    return batch


def jpeg_copy(images: torch.Tensor, quality: int) -> torch.Tensor:
    """The same frames after a JPEG round trip, float in [0, 1] like ``image``."""
    u8 = (images * 255).round().to(torch.uint8)
    return torch.stack([jpeg(im, quality) for im in u8]).float() / 255


def test_make_batch_provides_every_known_capability():
    class Wants(torch.nn.Module):
        requires = frozenset(KNOWN_CAPABILITIES)

    batch = make_batch(Wants(), n=6)
    assert batch["image_pair"].shape == batch["image"].shape and batch["image_pair"].dtype == torch.float32
    assert 0 < (batch["image_pair"] - batch["image"]).abs().mean() < 0.5  # degraded, same frames
    assert batch["manipulation"].dtype == torch.int64
    assert ((batch["manipulation"] > 0) == (batch["label"] == 1)).all()
    assert batch["manipulation"].tolist() == [0, 2, 0, 4, 0, 2]


MID_RUN = (50, 100, 10)  # iteration 50 of 100, 10 per epoch: the sixth epoch of ten


def mid_training(model):
    """``model`` in training mode at the middle of a run (see the module docstring)."""
    model.train().on_train_iter(*MID_RUN)
    return model


def seeded_loss(model, batch, seed: int = 1) -> torch.Tensor:
    """The loss at the current weights, leaving every buffer as it was (a method may update
    running statistics while computing its loss, e.g. UIA-ViT's Gaussian of real patches)."""
    saved = {k: v.clone() for k, v in model.named_buffers()}
    torch.manual_seed(seed)  # same random choices (e.g. DPL's mask positions) on every call
    loss = model.loss(model(batch), batch)["loss"]
    with torch.no_grad():
        for k, v in model.named_buffers():
            v.copy_(saved[k])
    return loss


def test_registry_has_the_core_methods():
    assert {"baseline", "dpl"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_builds_and_gives_finite_logits(name):
    model = build(name).eval()
    batch = make_batch(model)
    with torch.no_grad():
        out = model(batch)
    assert out["logit"].shape == (4,)
    assert torch.isfinite(out["logit"]).all()
    prov = model.provenance()
    assert prov["backbone"] and prov["weights"] == "random init"


@pytest.mark.parametrize("name", NAMES)
def test_every_trainable_parameter_gets_a_gradient(name):
    model = mid_training(build(name))
    batch = make_batch(model)
    terms = model.loss(model(batch), batch)
    assert "loss" in terms and all(v.dim() == 0 and torch.isfinite(v) for v in terms.values())
    terms["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing[:5]} ({len(missing)} in all)"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradient for {bad[:5]}"


@pytest.mark.parametrize("name", NAMES)
def test_one_train_step_lowers_the_loss_on_a_fixed_batch(name):
    model = mid_training(build(name))
    batch = make_batch(model)
    # a small step: Adam moves every weight by ~lr, and 1e-4 overshoots on the ViT of uia_vit
    wrapper = OptimWrapper(torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5))
    with torch.no_grad():
        before = seeded_loss(model, batch).item()
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    torch.manual_seed(1)
    terms = model.train_step(batch, wrapper)
    assert "loss" in terms and torch.isfinite(terms["loss"])
    with torch.no_grad():  # the same objective as before: only the weights may have moved
        for k, v in model.named_buffers():
            v.copy_(buffers[k])
        after = seeded_loss(model, batch).item()
    assert after < before, f"loss {before:.4f} -> {after:.4f}"


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trips_with_weights_only(name, tmp_path):
    src, dst = build(name, seed=0).eval(), build(name, seed=1).eval()
    batch = make_batch(src)
    save_tensors(tmp_path / "ckpt.pt", src.state_dict())
    dst.load_state_dict(load_tensors(tmp_path / "ckpt.pt"))  # torch.load(weights_only=True)
    with torch.no_grad():
        a, b = src(batch)["logit"], dst(batch)["logit"]
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["baseline", "dpl"])
def test_user_weights_load_from_a_local_file(name, tmp_path):
    src = build(name, seed=0)
    torch.save(src.backbone.state_dict(), tmp_path / "w.pth")
    torch.manual_seed(1)
    dst = METHODS.get(name)(**{**resolve_method(PARAMS, name)[1], "pretrained": str(tmp_path / "w.pth")})
    assert dst.provenance()["weights"] == "w.pth"
    for (n, a), (_, b) in zip(src.backbone.state_dict().items(), dst.backbone.state_dict().items()):
        assert torch.equal(a, b), n


def test_missing_user_weights_is_a_user_error():
    with pytest.raises(benchmark.errors.UserError, match="not found"):
        METHODS.get("baseline")(backbone="convnext_atto", pretrained="/nonexistent/w.pth")


def test_unknown_backbone_is_a_user_error():
    with pytest.raises(benchmark.errors.UserError, match="not a timm model"):
        METHODS.get("baseline")(backbone="no_such_net", pretrained=None)


# ---------------------------------------------------------------- recipes (benchmark/engine/optim.py)
SHARED = {"epochs": 3, "batch_size": 8, "optimizer": {"type": "Adam", "lr": 1e-3}, "param_scheduler": [],
          "clip_grad": None}


@pytest.mark.parametrize("name", NAMES)
def test_own_recipe_builds_and_steps_with_mmengine(name):
    from mmengine.optim.scheduler import OneCycleLR  # noqa: F401  (registers the schedulers)
    from mmengine.registry import PARAM_SCHEDULERS
    from benchmark.engine import optim

    model = build(name)
    for stage, _ in model.training_stages(3):
        recipe = optim.stage_recipe(model, stage, {**SHARED, "recipe": "own", "recipe_epochs": "own"})
        assert set(recipe) == set(optim.RECIPE_KEYS) | {"source"} and recipe["source"] == "own"
        assert recipe["batch_size"] >= 1 and recipe["epochs"] >= 1
        wrapper = optim.optim_wrapper(model, recipe)
        for cfg in recipe["param_scheduler"]:  # as the Runner builds them: per iteration, 4 per epoch
            cfg = {k: v for k, v in cfg.items() if k != "convert_to_iter_based"}
            if cfg.pop("by_epoch", True) and "convert_to_iter_based" in recipe["param_scheduler"][0]:
                sched = PARAM_SCHEDULERS.get(cfg.pop("type")).build_iter_from_epoch(wrapper, epoch_length=4, **cfg)
            else:
                sched = PARAM_SCHEDULERS.build({**cfg, "optimizer": wrapper})
            for _ in range(3):
                wrapper.step()
                sched.step()
            assert all(0 < lr < 1 for lr in wrapper.get_lr()["lr"])
        assert optim.describe(recipe).startswith("own: ")


def test_recipe_sources_and_epochs():
    from benchmark.engine import optim
    from benchmark.method import Method

    class Own(Method):  # (Method's defaults: no recipe_overrides)
        def stage_recipe(self, stage):
            return {"optimizer": {"type": "SGD", "lr": 0.1}, "batch_size": 4, "epochs": 30,
                    "param_scheduler": [{"type": "StepLR", "step_size": 2, "by_epoch": True}]}

    shared = optim.stage_recipe(Own(), "train", SHARED)
    assert shared == {**SHARED, "source": "shared"}
    own = optim.stage_recipe(Own(), "train", {**SHARED, "recipe": "own"})
    # recipe_epochs defaults to shared: the original's optimiser and batch, train.epochs' length;
    # a scheduler without `end` ends with the stage
    assert own["optimizer"] == {"type": "SGD", "lr": 0.1} and own["batch_size"] == 4 and own["epochs"] == 3
    assert own["param_scheduler"] == [{"end": 3, "type": "StepLR", "step_size": 2, "by_epoch": True}]
    assert optim.stage_recipe(Own(), "train", {**SHARED, "recipe": "own", "recipe_epochs": "own"})["epochs"] == 30
    assert optim.describe(own) == "own: SGD lr 0.1, StepLR, batch 4, 3 epochs"
    assert optim.describe(shared) == "shared: Adam lr 0.001, batch 8, 3 epochs"
    for key in ("recipe", "recipe_epochs"):
        with pytest.raises(benchmark.errors.UserError, match=f"train.{key}='mine'"):
            optim.stage_recipe(Own(), "train", {**SHARED, key: "mine"})


def test_a_one_cycle_recipe_runs_through_the_engine(tmp_path):
    """QAD's kind of schedule, under train.recipe=own, through mmengine's Runner: per iteration,
    from peak / 25 up to the peak (30 % of the 8 iterations) and down to ~0; train.json names it."""
    import json

    import numpy as np
    import pandas as pd

    from benchmark import engine
    from benchmark.data import store
    from benchmark.data.frames import TrainFrames
    from benchmark.method import Method

    class Tiny(Method):
        recipe = {"optimizer": {"type": "Adam", "lr": 0.01}, "batch_size": 4, "epochs": 4,
                  "param_scheduler": [{"type": "OneCycleLR", "eta_max": 0.01, "by_epoch": True,
                                       "convert_to_iter_based": True}]}

        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(3, 1)

        def forward(self, batch):
            return {"logit": self.head(batch["image"].mean((2, 3))).squeeze(1)}

    rng = np.random.default_rng(0)
    members = [(store.member_name(i), rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for i in range(8)]
    locations = store.write_shard(tmp_path, store.shard_path("c23", "real/000"), members)
    ds = TrainFrames(pd.DataFrame([{**loc, "label": i % 2} for i, loc in enumerate(locations)]), tmp_path, seed=0)
    torch.manual_seed(0)
    summary = engine.train(Tiny(), ds, tmp_path / "work", {**SHARED, "recipe": "own", "recipe_epochs": "own"}, seed=0)
    hist = pd.read_csv(tmp_path / "work" / "history.csv")
    lr = hist["lr"].tolist()  # at each epoch's end; 2 iterations per epoch, 8 in all
    assert len(lr) == 4 and lr[0] > 5 * 0.01 / 25 and lr == sorted(lr, reverse=True) and lr[-1] < 1e-6
    recipe = json.loads((tmp_path / "work" / "train.json").read_text())["recipe"]["train"]
    assert recipe["source"] == "own" and recipe["epochs"] == 4 and recipe["param_scheduler"][0]["end"] == 4
    assert summary["iters"] == 8
