"""UIA-ViT: pseudo-labels from two Gaussians, the consistency target and loss, the progressive
assembly, the Ledoit-Wolf refits and the loss schedule, against hand-computed values."""
import math

import benchmark  # noqa: F401  (torchvision shim)
import pytest
import torch
from mmengine.optim import OptimWrapper
from sklearn.covariance import LedoitWolf

from benchmark.errors import UserError
from methods.uia_vit import (UIAViT, assembly_weights, attention_logits, consistency_loss, consistency_target,
                             mahalanobis, pseudo_masks)


def test_mahalanobis_by_hand():
    precision = torch.tensor([[0.25, 0.0], [0.0, 1.0]])  # covariance diag(4, 1)
    x = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    # (x-mu)^T P (x-mu), mu = (0, 1): 4/4 + 1 = 2, 0 + 4 = 4, 1/4 + 0
    d = mahalanobis(x, torch.tensor([0.0, 1.0]), precision)
    assert d.tolist() == pytest.approx([math.sqrt(2.0), 2.0, 0.5])


def test_pseudo_labels_from_two_known_gaussians():
    real = (torch.zeros(2), torch.eye(2))
    fake = (torch.tensor([4.0, 0.0]), torch.eye(2))
    feat = torch.tensor([[[0.0, 0.0], [3.0, 0.0], [2.0, 0.0], [1.0, 1.0]]])
    # distance to real: 0, 3, 2, sqrt2; to fake: 4, 1, 2, sqrt10 -> forged where real > fake
    assert pseudo_masks(feat, real, fake).tolist() == [[0.0, 1.0, 0.0, 0.0]]
    wide_fake = (torch.tensor([4.0, 0.0]), torch.eye(2) / 16)  # std 4: everything is closer to it
    assert pseudo_masks(feat, real, wide_fake).tolist() == [[0.0, 1.0, 1.0, 1.0]]  # 0 vs 1: stays real


def test_consistency_target_by_hand():
    c = [torch.tensor(v) for v in (0.6, 0.7, 0.2)]  # c_real, c_fake, c_cross
    real = consistency_target(None, 3, *c)
    assert torch.allclose(real, torch.tensor([[1.0, 0.6, 0.6], [0.6, 1.0, 0.6], [0.6, 0.6, 1.0]]))
    fake = consistency_target(torch.tensor([[1.0, 0.0, 1.0]]), 3, *c)  # patches 0 and 2 forged
    assert torch.allclose(fake[0], torch.tensor([[0.7, 0.2, 0.7], [0.2, 0.6, 0.2], [0.7, 0.2, 0.7]]))


def test_consistency_loss_by_hand():
    amap = torch.full((1, 2, 2), 0.5)
    target = consistency_target(None, 2, torch.tensor(0.6), torch.tensor(0.6), torch.tensor(0.2))
    # sum |A - C| = 0.5 + 0.1 + 0.1 + 0.5 = 1.2, divided by N (P^2 - P) = 2
    assert consistency_loss(amap, target).item() == pytest.approx(0.6)
    assert consistency_loss(torch.zeros(0, 2, 2), target).item() == 0.0


def test_progressive_assembly_by_hand():
    cls_map = torch.tensor([[0.2, 0.6]])
    assert torch.allclose(assembly_weights(cls_map, 0.1, 0.125, 12, 0.7), torch.tensor([[0.5, 0.5]]))  # uniform
    # t = 0.7: w = sigmoid(0) = 1/2 -> (1/2 + map / 2) / P
    assert torch.allclose(assembly_weights(cls_map, 0.7, 0.125, 12, 0.7), torch.tensor([[0.3, 0.4]]))
    w = 1 / (1 + math.exp(12 * 0.3))  # t = 1 (test time): sigmoid(-3.6)
    assert torch.allclose(assembly_weights(cls_map, 1.0, 0.125, 12, 0.7), (w + (1 - w) * cls_map) / 2)


def _model(**kw):
    torch.manual_seed(0)
    return UIAViT(backbone="test_vit", img_size=32, patch_size=8, feature_layer=1, attention_layers=(1, 2), **kw)


def _batch(n=6):
    g = torch.Generator().manual_seed(0)
    return {"image": torch.rand(n, 3, 32, 32, generator=g), "label": torch.tensor([0, 1, 0, 1, 1, 0][:n])}


def test_attention_logits_are_the_blocks_own_attention():
    model = _model().eval()
    blk = model.vit.blocks[0]
    x = torch.randn(2, 17, model.vit.embed_dim)
    a = torch.softmax(attention_logits(blk.attn, blk.norm1(x)), -1)
    v = blk.attn.qkv(blk.norm1(x)).reshape(2, 17, 3, blk.attn.num_heads, -1).permute(2, 0, 3, 1, 4)[2]
    mine = blk.attn.proj((a @ v).transpose(1, 2).reshape(2, 17, -1))
    assert torch.allclose(mine, blk.attn(blk.norm1(x)), atol=1e-5)


def test_loss_schedule_pcl_from_the_second_epoch():
    model, batch = _model().train(), _batch()
    model.on_train_iter(9, 40, 10)  # last iteration of the first epoch: cross-entropy alone
    assert set(model.loss(model(batch), batch)) == {"loss", "bce"}
    model.on_train_iter(10, 40, 10)
    terms = model.loss(model(batch), batch)
    reg = 0.05 * (1 / 0.6 + 1 / 0.6) + 0.5 * 0.2  # the regularisers at the initial consistencies
    assert terms["c_reg"].item() == pytest.approx(reg)
    assert terms["loss"].item() == pytest.approx((terms["bce"] + 0.06 * terms["pcl"] + terms["c_reg"]).item())
    model.eval()
    assert set(model.loss(model(batch), batch)) == {"loss", "bce"}  # never at test time


def test_gaussians_are_refitted_with_ledoit_wolf_every_half_epoch():
    model, batch = _model(gauss_images=2).train(), _batch()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.0))  # weights stay: features repeat
    model.on_train_iter(0, 40, 4)  # iteration 1 of a 4-iteration epoch: no refit yet
    model.train_step(batch, wrapper)
    assert torch.equal(model.real_precision, torch.eye(len(model.real_mean)))
    with torch.no_grad():
        feat = model(batch)["patch_features"]  # (6, 4, 4, D): the grid of a 32-px crop, 8-px patches
    model.on_train_iter(1, 40, 4)  # iteration 2 = half of the epoch: refit on both batches' features
    model.train_step(batch, wrapper)
    real = feat[batch["label"] == 0][:2].reshape(-1, feat.shape[-1])  # every patch of the first 2 reals
    fake = feat[batch["label"] == 1][:2, 1:3, 1:3].reshape(-1, feat.shape[-1])  # rows/cols 3..10 of 14 -> 1..2 of 4
    for name, rows in (("real", real), ("fake", fake)):
        lw = LedoitWolf().fit(torch.cat([rows, rows]).double().numpy())
        assert torch.allclose(getattr(model, f"{name}_mean"), torch.from_numpy(lw.location_).float(), atol=1e-5)
        assert torch.allclose(getattr(model, f"{name}_precision"), torch.from_numpy(lw.precision_).float(),
                              rtol=1e-3, atol=1e-3)
    assert model._gathered == {"real": [], "fake": []}
    assert "real_precision" in model.state_dict() and "fake_mean" in model.state_dict()


def test_layers_outside_the_vit_are_a_user_error():
    with pytest.raises(UserError, match="block numbers"):
        UIAViT(backbone="test_vit", img_size=32, patch_size=8, feature_layer=1, attention_layers=(99,))


def test_other_input_sizes_are_accepted():
    model = _model().eval()
    with torch.no_grad():
        out = model({"image": torch.rand(2, 3, 48, 48)})
    assert out["logit"].shape == (2,) and out["patch_map"].shape == (2, 36, 36)
