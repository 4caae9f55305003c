"""Method-specific checks of F3Net, SRM, SPSL and SIA against hand-computed or published values,
and of the stage splitter they share (methods/_staged.py)."""
from __future__ import annotations

import math

import benchmark  # noqa: F401  (torchvision shim before timm)
import numpy as np
import pytest
import scipy.fft
import timm
import torch

from methods._srm_parts import DCMA, AMSoftmaxHead, SRMFilter, am_softmax_loss, srm_kernels
from methods._staged import Staged
from methods.f3net import FAD, LFS, MixBlock, area_edge, dct_matrix, fad_masks, index_bands
from methods.sia import SIA, sia_attention, sia_distance
from methods.spsl import SPSL, phase_only
from methods.srm import SRMNet


# ---------------------------------------------------------------- SRM
def test_srm_kernels_are_the_published_ones():
    kb, kv, h2 = srm_kernels()
    # Fridrich & Kodovsky 2012 ("Rich models for steganalysis"), as used for manipulation
    # detection by Zhou et al. 2018 and Luo et al. 2021: KB/4, KV/12, 2nd-order horizontal/2.
    assert torch.equal(kb * 4, torch.tensor([[0., 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0],
                                             [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]]))
    assert torch.equal(kv * 12, torch.tensor([[-1., 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2],
                                              [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]]))
    assert torch.equal(h2 * 2, torch.tensor([[0., 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -2, 1, 0],
                                             [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]))
    assert kb[2, 2] == -1 and kv[2, 2] == -1 and h2[2, 2] == -1  # centre weights after normalising
    for k in (kb, kv, h2):
        assert abs(k.sum()) < 1e-6  # high-pass: a flat image gives no residual


def test_srm_filter_impulse_response_and_truncation():
    f = SRMFilter(truncate=3.0)
    x = torch.zeros(1, 3, 9, 9)
    x[:, :, 4, 4] = 0.5  # the same small impulse on R, G and B
    out = f.image(x)
    # image mode sums the kernel over the three colour channels: response = 3 * 0.5 * kernel
    assert torch.allclose(out[0, :, 2:7, 2:7], 1.5 * srm_kernels())
    assert out[0, :, 0, :].abs().sum() == 0
    big = f.image(x * 100)
    assert big.max() == 3.0 and big.min() == -3.0
    assert f.depthwise(torch.rand(2, 5, 8, 8)).shape == (2, 15, 8, 8)
    assert not any(p.requires_grad for p in f.parameters()) and "kernels" in dict(f.named_buffers())


def test_am_softmax_against_a_hand_value():
    # cos = (0.2, 0.6), label 1: logits 30 (0.2, 0.6 - 0.45) = (6, 4.5); CE = log(1 + e^1.5)
    assert am_softmax_loss(torch.tensor([[0.2, 0.6]]), torch.tensor([1]), 0.45, 30.0).item() == \
        pytest.approx(math.log(1 + math.exp(1.5)))
    head = AMSoftmaxHead(2)
    with torch.no_grad():
        head.linear.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 5.0]]))  # class directions (1, 0), (0, 1)
    feat = torch.tensor([[3.0, 4.0]])  # normalised (0.6, 0.8): cos = (0.6, 0.8)
    assert head(feat).item() == pytest.approx(30 * 0.2)  # fake logit s (cos_fake - cos_real)
    # label 0: logits 30 (0.6 - 0.45, 0.8) = (4.5, 24): CE = log(1 + e^19.5)
    assert head.loss(feat, torch.tensor([0])).item() == pytest.approx(math.log(1 + math.exp(19.5)))
    raw = AMSoftmaxHead(2, "logits")  # DeepfakeBench's reading: the linear outputs stand for cos
    with torch.no_grad():
        raw.linear.weight.copy_(torch.eye(2)), raw.linear.bias.zero_()
    assert raw(feat).item() == pytest.approx(1.0)
    # z = (3, 4), label 0: logits 30 (3 - 0.45, 4) -> CE = log(1 + e^{30 (4 - 3 + 0.45)})
    assert raw.loss(feat, torch.tensor([0])).item() == pytest.approx(math.log1p(math.exp(30 * 1.45)), rel=1e-5)


def test_srm_works_on_the_image_at_the_original_scale():
    torch.manual_seed(0)
    model = SRMNet(backbone="test_resnet", input_size=32).eval()
    seen = {}
    model.hf_stream.stages[0].register_forward_pre_hook(lambda mod, args: seen.setdefault("hf", args[0]))
    image = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        model({"image": image})
    assert torch.equal(seen["hf"], model.srm.image(2 * image - 1))  # [-1, 1], whatever the backbone's stats
    assert len(model.dcma) == 2 and model.dcma_at == [3, 3]  # two DCMAs after the stride-16 stage
    with pytest.raises(benchmark.errors.UserError, match="input_size"):
        model({"image": torch.rand(1, 3, 48, 48)})


def test_dcma_starts_as_identity_and_learns_maps_over_positions():
    torch.manual_seed(0)
    dcma = DCMA(16, 4 * 4)
    a, b = torch.rand(2, 16, 4, 4), torch.rand(2, 16, 4, 4)
    assert all(torch.equal(u, v) for u, v in zip(dcma(a, b), (a, b)))  # gammas start at 0
    assert dcma.map_ab.weight.shape == (16, 16) and dcma.map_ab.weight.requires_grad
    with torch.no_grad():
        dcma.gamma.fill_(1.0)
    out_a, _ = dcma(a, b)
    assert not torch.allclose(out_a, a)
    with pytest.raises(benchmark.errors.UserError, match="positions"):
        dcma(torch.rand(1, 16, 2, 2), torch.rand(1, 16, 2, 2))


# ---------------------------------------------------------------- F3Net
@pytest.mark.parametrize("n", [8, 10, 64])
def test_f3net_dct_basis_is_orthonormal_dct_ii(n):
    d = dct_matrix(n).double()
    assert torch.allclose(d @ d.T, torch.eye(n, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(d[0], torch.full((n,), 1 / math.sqrt(n), dtype=torch.float64), atol=1e-7)
    ref = scipy.fft.dct(np.eye(n), type=2, norm="ortho", axis=0)  # columns = DCT of unit vectors
    assert np.allclose(d.numpy(), ref, atol=1e-6)


def _triangle(e: int) -> int:
    """#{(i, j): i + j <= e} in a large enough square: 1 + 2 + ... + (e + 1)."""
    return (e + 1) * (e + 2) // 2


def test_f3net_band_areas_follow_the_release_at_299():
    m = fad_masks(299, "release")
    # low: i + j <= 299 // 2.82 = 106; middle: 106 <= i + j <= 299 // 2 = 149; high: i + j >= 149
    low, mid, high = _triangle(106), _triangle(149) - _triangle(105), 299 * 299 - _triangle(148)
    assert (low, mid, high) == (5778, 5654, 78226)
    assert [int(b.sum()) for b in m] == [low, mid, high, 299 * 299]
    assert round(100 * low / 299 ** 2, 1) == 6.5 and round(100 * mid / 299 ** 2, 1) == 6.3  # the shares
    assert m[0, 106, 0] == m[1, 106, 0] == 1 and m[1, 149, 0] == m[2, 149, 0] == 1  # edges in both bands
    assert m[3].min() == 1  # the all-pass band


def test_f3net_area_bands_partition_the_spectrum():
    # 1/16 of 299^2 = 5587.6 >= T(104) = 5565 (T(105) = 5671 is more); 1/8 = 11175.1 >= T(148) = 11175
    assert (area_edge(299, 1 / 16), area_edge(299, 1 / 8)) == (104, 148)
    m = fad_masks(299, "area")
    assert [int(b.sum()) for b in m[:3]] == [5565, 11175 - 5565, 299 * 299 - 11175]
    assert torch.equal(m[:3].sum(0), torch.ones(299, 299))
    assert (area_edge(8, 1 / 16), area_edge(8, 1 / 8)) == (1, 2)  # 64/16 = 4 >= T(1) = 3; 8 >= T(2) = 6
    with pytest.raises(benchmark.errors.UserError, match="fad_bands"):
        fad_masks(8, "mine")


def test_f3net_index_bands_partition_the_lfs_window():
    m = index_bands(10, 6)
    assert torch.equal(m.sum(0), torch.ones(10, 10)) and m[0, 0, 0] == 1 and m[5, 9, 9] == 1


@pytest.mark.parametrize("rule", ["release", "area"])
def test_f3net_fad_all_pass_band_is_the_image_when_filters_are_zero(rule):
    torch.manual_seed(0)
    fad = FAD(16, rule)
    with torch.no_grad():
        fad.learn.zero_()  # sigma(0) = 0: only the base masks
    x = torch.rand(2, 3, 16, 16)
    out = fad(x).view(2, 4, 3, 16, 16)
    assert out.shape == (2, 4, 3, 16, 16)
    assert torch.allclose(out[:, 3], x, atol=1e-5)  # the 12-channel FAD ends with the all-pass band
    if rule == "area":  # low + middle + high partition the spectrum
        assert torch.allclose(out[:, :3].sum(1), x, atol=1e-5)
    assert fad.learn.requires_grad and not any(b.requires_grad for b in fad.buffers())


def test_f3net_fad_runs_at_another_input_size():
    torch.manual_seed(0)
    fad = FAD(16)
    x = torch.rand(1, 3, 24, 24)
    fad(x).sum().backward()
    assert fad.learn.grad is not None and fad.learn.grad.abs().sum() > 0  # resized filters still learn
    with torch.no_grad():
        fad.learn.zero_()
        assert torch.allclose(fad(x).view(1, 4, 3, 24, 24)[:, 3], x, atol=1e-5)
    with pytest.raises(benchmark.errors.UserError, match="square"):
        fad(torch.rand(1, 3, 16, 24))


def test_f3net_mixblock_cross_attention_by_hand():
    mix = MixBlock(1).eval()  # eval: BN uses its running statistics (mean 0, var 1)
    with torch.no_grad():
        for conv in [*mix.q, *mix.k]:
            conv.weight.fill_(1.0), conv.bias.zero_()
        for out in mix.out:
            out[0].weight.fill_(1.0), out[0].bias.zero_()
        mix.gamma.fill_(math.log(3.0))  # 2 sigmoid(ln 3) - 1 = 2 * 3/4 - 1 = 1/2
    a = torch.eye(2).view(1, 1, 2, 2)
    b = torch.zeros(1, 1, 2, 2)
    # energy = a a^T + b b^T = I; softmax of each row [1, 0] -> [e, 1] / (e + 1)
    att = mix.attention(a, b)[0, 0]
    e = math.e
    assert torch.allclose(att, torch.tensor([[e, 1.0], [1.0, e]]) / (e + 1))
    ya, yb = mix(a, b)
    # y_a = a + BN(conv(b * att * 1/2)) = a (b = 0); y_b = b + BN(conv(a * att * 1/2)) = diag(e / (e + 1) / 2)
    assert torch.allclose(ya, a, atol=1e-4)
    assert torch.allclose(yb[0, 0], torch.diag(torch.full((2,), e / (e + 1) / 2)), atol=1e-4)
    fresh = MixBlock(3)  # gammas start at 0: both streams pass unchanged
    x, y = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    assert all(torch.allclose(u, v, atol=1e-4) for u, v in zip(fresh(x, y), (x, y)))


def test_f3net_lfs_of_a_flat_image():
    lfs = LFS(window=10, stride=2, bands=6)
    with torch.no_grad():
        lfs.learn.zero_()
    x = torch.full((1, 3, 64, 64), 0.5)
    q = lfs(x)
    assert q.shape == (1, 6, 28, 28)  # (64 - 10) / 2 + 1
    # a flat grey patch 0.5 has one DCT coefficient, DC = 0.5 * 10 (orthonormal), in band 0
    assert torch.allclose(q[:, 0], torch.full((1, 28, 28), math.log10(5 + 1e-6)), atol=1e-5)
    leak = 10 ** q[:, 1:].double() - 1e-6  # the other bands' L1 energy: zero up to float32 round-off
    assert leak.abs().max() < 1e-6


# ---------------------------------------------------------------- SPSL
def test_spsl_phase_only_reconstruction_by_hand():
    # FFT2 of [[1,2],[3,4]] = [[10,-2],[-4,0]]: phases 0, pi, pi, 0 (angle(0) = 0), so
    # exp(i phase) = [[1,-1],[-1,1]] = FFT2 of a unit impulse at (1, 1).
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert torch.allclose(phase_only(x), torch.tensor([[0.0, 0.0], [0.0, 1.0]]), atol=1e-6)
    # a flat image: only the DC term is non-zero, every phase is 0 -> a unit impulse at the origin
    flat = phase_only(torch.full((4, 4), 0.7))
    expect = torch.zeros(4, 4)
    expect[0, 0] = 1
    assert torch.allclose(flat, expect, atol=1e-6)
    # a shifted impulse keeps its position (its spectrum already has magnitude one)
    imp = torch.zeros(5, 5)
    imp[2, 3] = 1
    assert torch.allclose(phase_only(imp), imp, atol=1e-6)


def test_spsl_feeds_rgb_plus_phase_and_can_be_shallow():
    torch.manual_seed(0)
    model = SPSL(backbone="test_resnet", stages=3).eval()
    assert len(model.net.stages) == 3 and model.head.in_features == model.net.channels[2]
    first = next(m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 4
    p = model.phase_channel(torch.rand(2, 3, 16, 16))
    assert p.shape == (2, 1, 16, 16)
    assert torch.allclose(p.mean((-1, -2)), torch.zeros(2, 1), atol=1e-5)


# ---------------------------------------------------------------- SIA
SIA_MAP = torch.tensor([[[1.0, 2.0, 4.0]], [[0.0, 1.0, 0.0]]]).unsqueeze(0)  # (1, 2, 1, 3)


def test_sia_distances_by_hand():
    d = sia_distance(SIA_MAP)
    # intra |9 x - sum of the zero-padded 3x3 box|: channel 0 -> |9-3|, |18-7|, |36-6|; channel 1 -> 1, 8, 1
    # inter |sum_{i=1..5} (x_c - x_{c+i mod 2})| = 3 |x_0 - x_1| = (3, 3, 12) for both channels
    assert torch.allclose(d[0, 0, 0], torch.tensor([6 + 1.5, 11 + 1.5, 30 + 6.0]))
    assert torch.allclose(d[0, 1, 0], torch.tensor([1 + 1.5, 8 + 1.5, 1 + 6.0]))
    one = sia_distance(SIA_MAP, channels=1)  # against the next channel only: |x_0 - x_1| = (1, 1, 4)
    assert torch.allclose(one[0, 0, 0], torch.tensor([6 + 0.5, 11 + 0.5, 30 + 2.0]))
    x = SIA_MAP.clone().requires_grad_(True)
    assert not sia_distance(x).requires_grad  # computed without gradient, as in the original


def test_sia_self_information_attention_by_hand():
    d = sia_distance(SIA_MAP)  # mean over the image = (7.5 + 12.5 + 36 + 2.5 + 9.5 + 7) / 6 = 12.5
    out, s = sia_attention(SIA_MAP, d)
    want_s = [[0.3, 0.5, 1.44], [0.1, 0.38, 0.28]]  # d / (2 * 12.5)
    assert torch.allclose(s[0, :, 0], torch.tensor(want_s))
    for c in range(2):
        info = [-math.log(math.exp(-v) + 0.1) for v in want_s[c]]
        channel = 1 + sum(info) / 3
        for u in range(3):
            want = SIA_MAP[0, c, 0, u].item() * (1 + 1 / (1 + math.exp(-want_s[c][u]))) * channel
            assert out[0, c, 0, u].item() == pytest.approx(want, rel=1e-6)


def test_sia_normalises_per_image_unless_asked_for_the_batch():
    a, b = SIA_MAP, 3 * SIA_MAP.flip(-1)
    both = torch.cat([a, b])
    alone, _ = sia_attention(a, sia_distance(a))
    with_b, _ = sia_attention(both, sia_distance(both), per_image=True)
    assert torch.allclose(with_b[:1], alone)  # an image's map does not depend on its batch
    batch_mean, _ = sia_attention(both, sia_distance(both), per_image=False)
    assert not torch.allclose(batch_mean[:1], alone)  # the original's batch mean does


def test_sia_acts_at_strides_4_8_16_with_dense_connections():
    torch.manual_seed(0)
    model = SIA(backbone="tinynet_e").eval()
    assert [model.net.reductions[i] for i in model.at] == [4, 8, 16]
    assert set(model.dense) == {"1_2", "1_3", "2_3"}  # every earlier attention point feeds every later one
    with torch.no_grad():
        out = model({"image": torch.rand(2, 3, 64, 64)})
    assert out["logit"].shape == (2,)
    with pytest.raises(benchmark.errors.UserError, match="stride 12"):
        SIA(backbone="tinynet_e", at_strides=(12,))


# ---------------------------------------------------------------- stage splitter
@pytest.mark.parametrize("name", ["resnet10t", "test_resnet", "test_efficientnet", "convnext_atto"])
def test_staged_backbone_matches_timm_intermediates(name):
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False, num_classes=0).eval()
    torch.manual_seed(0)
    staged = Staged(name).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        want = ref.forward_intermediates(x, intermediates_only=True)
        got = staged(x)
    assert len(got) == len(want) == len(staged.channels)
    for a, b, c in zip(got, want, staged.channels):
        assert a.shape[1] == c and torch.allclose(a, b, atol=1e-5)


def test_staged_adapts_the_input_conv():
    s = Staged("test_resnet", in_chans=9).eval()
    assert s(torch.rand(1, 9, 32, 32))[-1].shape[1] == s.channels[-1]
