"""QAD: HSIC against hand-computed values; AWP applied for the adversarial step, then removed,
after its warm-up epochs; pairs drawn among all of a frame's other qualities."""
import copy
import math

import benchmark  # noqa: F401  (torchvision shim)
import pytest
import torch
from mmengine.optim import OptimWrapper

from benchmark.errors import UserError
from methods.qad import QAD, hsic, kernel_matrix, normalized_hsic

torch.set_default_dtype(torch.float32)


def test_hsic_linear_kernel_by_hand():
    # x = (1, 2, 3): centred (-1, 0, 1); K = x x^T, HKH = c c^T; tr(HKH HLH) = (c.d)^2.
    x = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    y_same, y_indep = x.clone(), torch.tensor([[1.0], [-2.0], [1.0]], dtype=torch.float64)  # d = (1,-2,1), c.d = 0
    assert hsic(x, y_same, "linear").item() == pytest.approx(2.0 ** 2 / 2 ** 2)  # (c.c)^2 / (n-1)^2 = 4/4
    assert hsic(x, y_indep, "linear").item() == pytest.approx(0.0, abs=1e-12)
    assert normalized_hsic(x, y_same, "linear").item() == pytest.approx(1.0)
    assert normalized_hsic(x, y_indep, "linear").item() == pytest.approx(0.0, abs=1e-9)


def test_hsic_gaussian_kernel_by_hand():
    # two samples, sigma = 1: K = [[1, a], [a, 1]], a = exp(-|x1-x2|^2 / 2); H = I - 1/2.
    # K = (1+a)/2 11^T + (1-a)/2 M, M = [[1,-1],[-1,1]]; H kills 11^T and keeps M, so
    # HKH = (1-a)/2 M, HLH = (1-b)/2 M, tr(HKH HLH) = (1-a)(1-b)/4 tr(M^2) = (1-a)(1-b); (n-1)^2 = 1.
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)   # |d|^2 = 2 -> a = e^-1
    y = torch.tensor([[0.0], [2.0]], dtype=torch.float64)             # |d|^2 = 4 -> b = e^-2
    a, b = math.exp(-1), math.exp(-2)
    assert kernel_matrix(x, "gaussian", 1.0)[0, 1].item() == pytest.approx(a)
    assert hsic(x, y, "gaussian", 1.0).item() == pytest.approx((1 - a) * (1 - b))
    # identical features: normalised HSIC is 1; a constant (independent) side gives 0
    assert normalized_hsic(x, x.clone(), "gaussian", 1.0).item() == pytest.approx(1.0)
    const = torch.ones(2, 3, dtype=torch.float64)
    assert hsic(x, const, "gaussian", 1.0).item() == pytest.approx(0.0, abs=1e-15)


def test_hsic_independent_vs_identical_features_on_random_samples():
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(256, 4, generator=g), torch.randn(256, 4, generator=g)
    same = normalized_hsic(x, x, "gaussian", 2.0).item()
    indep = normalized_hsic(x, z, "gaussian", 2.0).item()
    assert same == pytest.approx(1.0) and indep < 0.05


def _model(**kw):
    torch.manual_seed(0)
    return QAD(backbone="test_resnet", **kw).train()


def _batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(n, 3, 32, 32, generator=g)
    return {"image": img, "image_pair": (img + 0.1 * torch.randn(img.shape, generator=g)).clamp(0, 1),
            "label": torch.arange(n) % 2}


def _grads_at(model, batch, shift=None):
    """Gradient of the loss at the model's weights (+ an optional per-parameter shift)."""
    m = copy.deepcopy(model)
    params = dict(m.named_parameters())
    with torch.no_grad():
        for name, v in (shift or {}).items():
            params[name].add_(v)
    m.zero_grad()
    m.loss(m(batch), batch)["loss"].backward()
    return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


def test_awp_perturbs_for_the_adversarial_step_and_removes_it():
    lr = 0.1
    model, batch = _model(awp_gamma=0.01, awp_warmup_epochs=0), _batch()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    clean = _grads_at(model, batch)
    awp_names = {n for n, p in model.named_parameters() if p.dim() > 1}
    shift = {n: 0.01 * before[n].norm() * clean[n] / clean[n].norm() for n in awp_names if clean[n].norm() > 0}
    adv = _grads_at(model, batch, shift)  # gradient at the perturbed weights, computed independently

    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=lr))
    model.train_step(batch, wrapper)
    for n, p in model.named_parameters():
        expected = before[n] - lr * adv[n]  # before + the optimiser's update only
        assert torch.allclose(p.detach(), expected, atol=1e-6, rtol=1e-5), n
    # the step used the perturbed gradient, not the clean one
    assert any(not torch.allclose(adv[n], clean[n], atol=1e-6) for n in shift)
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())  # zeroed afterwards


def test_with_zero_learning_rate_the_weights_come_back_exactly():
    model, batch = _model(awp_gamma=0.05, awp_warmup_epochs=0), _batch()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train_step(batch, OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.0)))
    assert all(torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())


def test_awp_waits_for_its_warmup_epochs():
    lr = 0.1
    model, batch = _model(awp_gamma=0.01, awp_warmup_epochs=1), _batch()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    clean = _grads_at(model, batch)
    model.on_train_iter(4, 10, 5)  # the last iteration of the first epoch: a plain step, clean gradient
    model.train_step(batch, OptimWrapper(torch.optim.SGD(model.parameters(), lr=lr)))
    for n, p in model.named_parameters():
        assert torch.allclose(p.detach(), before[n] - lr * clean[n], atol=1e-6, rtol=1e-5), n
    model.on_train_iter(5, 10, 5)  # the second epoch: adversarial, so the update differs
    after_plain = {n: p.detach().clone() for n, p in model.named_parameters()}
    plain = _grads_at(model, batch)
    model.train_step(batch, OptimWrapper(torch.optim.SGD(model.parameters(), lr=lr)))
    assert any(not torch.allclose(p.detach(), after_plain[n] - lr * plain[n], atol=1e-6)
               for n, p in model.named_parameters() if p.dim() > 1)


def test_pairs_are_drawn_among_all_other_qualities(tmp_path):
    """A c23 frame with raw and c40 counterparts is paired with each, per item and epoch (seeded);
    the pipeline hands TrainFrames every other extracted quality."""
    import numpy as np
    import pandas as pd

    from benchmark.data import selection, store
    from benchmark.data.frames import TrainFrames

    rows = []
    for q, quality in enumerate(("raw", "c23", "c40")):
        members = [(store.member_name(f), np.full((4, 4, 3), 40 * q + f, np.uint8)) for f in range(6)]
        locations = store.write_shard(tmp_path, store.shard_path(quality, "real/000"), members)
        rows += [{"video_id": "real/000", "frame_idx": f, "label": 0, "manipulation": "real",
                  "quality": quality, "split": "train", **loc} for f, loc in enumerate(locations)]
    manifest = pd.DataFrame(rows)
    manifest.to_parquet(tmp_path / "manifest.parquet")
    pairs = selection.pair_rows(manifest, {"dataset": "ff", "quality": "c23", "split": "train"})
    assert set(pairs.quality) == {"raw", "c40"}
    ds = TrainFrames(manifest[manifest.quality == "c23"], tmp_path, seed=0, pair_manifest=pairs)
    seen = set()
    for epoch in range(4):
        ds.epoch = epoch
        for i in range(len(ds)):
            level = int(ds[i]["image_pair"][0, 0, 0])
            assert level - 40 * (level // 40) == i  # the same frame ...
            seen.add(level // 40)                  # ... at raw (0) or c40 (2), never c23 (1)
            assert int(ds[i]["image_pair"][0, 0, 0]) == level  # the draw is seeded by (seed, epoch, index)
    assert seen == {0, 2}


def test_loss_uses_the_pair_and_the_kernel_regulariser():
    model, batch = _model(), _batch()
    terms = model.loss(model(batch), batch)
    assert set(terms) == {"loss", "bce", "bce_pair", "hkr"}
    expected = terms["bce"] + terms["bce_pair"] + 0.003 * terms["hkr"]
    assert terms["loss"].item() == pytest.approx(expected.item())
    assert 0.0 <= terms["hkr"].item() <= 0.85 + 1e-6  # sum of the weights 0.1 + 0.25 + 0.5
    # the regulariser is 0 when the pair is the image itself (identical features)
    same = {**batch, "image_pair": batch["image"]}
    model.eval()
    assert model.loss(model(same), same)["hkr"].item() == pytest.approx(0.0, abs=1e-5)


def test_bad_hkr_weights_is_a_user_error():
    with pytest.raises(UserError, match="hkr_weights"):
        QAD(backbone="test_resnet", hkr_weights=(1.0, 1.0))
