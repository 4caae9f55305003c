"""t-SNE and Grad-CAM figures over every registered method that offers features / a CAM layer."""
import numpy as np
import pytest
import torch

from benchmark import registry
from benchmark.report import model_plots

registry.load_all()
TINY = {"baseline": {"backbone": "resnet10t"}, "dpl": {"backbone": "resnet10t", "hidden": 8}}
LABELS = ["real", "DF", "F2F", "FS", "NT", "real", "DF", "F2F"]


def build(name):
    torch.manual_seed(0)
    return registry.get(registry.METHODS, name)(**TINY.get(name, {})).eval()


def batch(n=8, size=32):
    g = torch.Generator().manual_seed(0)
    return {"image": torch.rand(n, 3, size, size, generator=g),
            "vqi_level": torch.randint(1, 6, (n,), generator=g),
            "fii_level": torch.randint(1, 6, (n,), generator=g)}


@pytest.mark.parametrize("name", sorted(TINY))
def test_features_are_what_the_head_reads(name):
    m, b = build(name), batch()
    f = m.features(b)
    assert f.shape[0] == 8 and f.ndim == 2
    with torch.no_grad():  # the head applied to the features gives the logit
        assert torch.allclose(m.head(f).squeeze(1), m(b)["logit"], atol=1e-5)


@pytest.mark.parametrize("name", sorted(TINY))
def test_grad_cam_maps(name):
    """The logit is linear in the head, so flipping the head's sign flips the CAM before its
    ReLU: at a random init one of the two signs must give a non-empty map."""
    m = build(name)
    maps = model_plots.grad_cam(m, batch(size=96))  # 3 x 3 at the last stage
    assert maps.shape == (8, 96, 96) and np.all(maps >= 0) and np.all(maps <= 1)
    with torch.no_grad():
        for p in m.head.parameters():
            p.neg_()
    flipped = model_plots.grad_cam(m, batch(size=96))
    assert max(maps.max(), flipped.max()) == pytest.approx(1.0)  # normalised per image
    assert not np.allclose(maps, flipped)


def test_a_method_without_cam_layer_or_features_is_skipped(tmp_path):
    class NoHooks(torch.nn.Module):
        def features(self, batch):
            return None

        def cam_layer(self):
            return None
    assert model_plots.grad_cam(NoHooks(), batch()) is None
    assert model_plots.tsne_figure({"x": NoHooks()}, batch(), LABELS, tmp_path, 0) is None


def test_figures_written_and_deterministic(tmp_path):
    models = {n: build(n) for n in sorted(TINY)}
    outs = []
    for d in ("a", "b"):
        t = model_plots.tsne_figure(models, batch(), LABELS, tmp_path / d, seed=0)
        g = model_plots.gradcam_figure(models, batch(5, 96), LABELS[:5], tmp_path / d)
        outs.append((t, g))
    for fa, fb in zip(*outs):
        for ext in ("png", "svg", "txt"):
            a, b = fa.png.with_suffix("." + ext), fb.png.with_suffix("." + ext)
            assert a.read_bytes() == b.read_bytes(), a.name
    assert "t-SNE" in outs[0][0].caption and "Grad-CAM" in outs[0][1].caption
