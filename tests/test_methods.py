"""Contract tests run on EVERY registered method, each built from its params.yaml defaults.

A newly registered method is covered automatically. The batch gives what ``requires`` asks
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
    return METHODS.get(name)(**(PARAMS["methods"][name] or {}))


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
    model = build(name).train()
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
    model = build(name).train()
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
    dst = METHODS.get(name)(**{**PARAMS["methods"][name], "pretrained": str(tmp_path / "w.pth")})
    assert dst.provenance()["weights"] == "w.pth"
    for (n, a), (_, b) in zip(src.backbone.state_dict().items(), dst.backbone.state_dict().items()):
        assert torch.equal(a, b), n


def test_missing_user_weights_is_a_user_error():
    with pytest.raises(benchmark.errors.UserError, match="not found"):
        METHODS.get("baseline")(backbone="convnext_atto", pretrained="/nonexistent/w.pth")


def test_unknown_backbone_is_a_user_error():
    with pytest.raises(benchmark.errors.UserError, match="not a timm model"):
        METHODS.get("baseline")(backbone="no_such_net", pretrained=None)
