"""UIA-ViT: Mahalanobis pseudo-masks, the patch-consistency loss and the real-patch Gaussian."""
import math

import benchmark  # noqa: F401  (torchvision shim)
import pytest
import torch

from benchmark.errors import UserError
from methods.uia_vit import UIAViT, attention_weights, consistency_loss, mahalanobis, pseudo_masks


def test_mahalanobis_by_hand():
    cov = torch.tensor([[4.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    # (x-mu)^T diag(1/4, 1) (x-mu), mu = (0, 1): (4/4 + 1) = 2, (0 + 4) = 4, (1/4 + 0)
    d = mahalanobis(x, torch.tensor([0.0, 1.0]), cov)
    assert d.tolist() == pytest.approx([math.sqrt(2.0), 2.0, 0.5])


def test_pseudo_masks_mark_far_patches_of_fakes_only():
    dist = torch.tensor([[1.0, 2.0, 5.0, 4.0], [1.0, 2.0, 5.0, 4.0]])
    masks = pseudo_masks(dist, torch.tensor([1, 0]), threshold=0.5)
    # min-max normalised: 0, 0.25, 1, 0.75 -> > 0.5 on patches 2 and 3; the real face is all 0
    assert masks.tolist() == [[0, 0, 1, 1], [0, 0, 0, 0]]


def test_consistency_loss_by_hand():
    masks = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    perfect = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.5], [0.5, 0.5]]])
    assert consistency_loss(perfect, masks).item() == pytest.approx(0.0, abs=1e-6)
    uniform = torch.full((2, 2, 2), 0.5)  # each patch gives half its attention to the other label
    assert consistency_loss(uniform, masks).item() == pytest.approx(math.log(2))
    # rows are renormalised; the all-real second image never counts
    skew = torch.tensor([[[3.0, 1.0], [1.0, 1.0]], [[0.0, 9.0], [9.0, 0.0]]])
    assert consistency_loss(skew, masks).item() == pytest.approx((-math.log(0.75) - math.log(0.5)) / 2)
    assert consistency_loss(skew, torch.zeros(2, 2)).item() == 0.0


def _model():
    torch.manual_seed(0)
    return UIAViT(backbone="test_vit", img_size=32, patch_size=8, feature_layer=1, attention_layers=(1, 2))


def test_attention_weights_reproduce_the_blocks_own_attention():
    model = _model().eval()
    blk = model.vit.blocks[0]
    x = torch.randn(2, 17, model.vit.embed_dim)
    a = attention_weights(blk.attn, blk.norm1(x))
    v = blk.attn.qkv(blk.norm1(x)).reshape(2, 17, 3, blk.attn.num_heads, -1).permute(2, 0, 3, 1, 4)[2]
    mine = blk.attn.proj((a @ v).transpose(1, 2).reshape(2, 17, -1))
    assert torch.allclose(mine, blk.attn(blk.norm1(x)), atol=1e-5)
    assert torch.allclose(a.sum(-1), torch.ones(2, blk.attn.num_heads, 17))


def test_gaussian_is_estimated_from_real_patches_only_in_training():
    model = _model().train()
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(4, 3, 32, 32, generator=g), "label": torch.tensor([0, 1, 0, 1])}
    out = model(batch)
    terms = model.loss(out, batch)
    feat = out["patch_features"].detach()
    real = feat[batch["label"] == 0].reshape(-1, feat.shape[-1])
    assert bool(model.gauss_seen)
    assert torch.allclose(model.gauss_mean, real.mean(0), atol=1e-5)  # first update sets it
    assert torch.allclose(model.gauss_cov, torch.cov(real.T), atol=1e-5)
    assert terms["pcl"].item() > 0 and terms["loss"].item() == pytest.approx((terms["bce"] + terms["pcl"]).item())
    model.eval()
    mean = model.gauss_mean.clone()
    model.loss(model(batch), batch)
    assert torch.equal(model.gauss_mean, mean)  # evaluation never updates it


def test_layers_outside_the_vit_are_a_user_error():
    with pytest.raises(UserError, match="block numbers"):
        UIAViT(backbone="test_vit", img_size=32, patch_size=8, feature_layer=1, attention_layers=(99,))


def test_other_input_sizes_are_accepted():
    model = _model().eval()
    with torch.no_grad():
        out = model({"image": torch.rand(2, 3, 48, 48)})
    assert out["logit"].shape == (2,) and out["patch_attention"].shape == (2, 36, 36)
