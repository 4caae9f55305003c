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

from methods._staged import Staged
from methods.f3net import FAD, LFS, band_masks, dct_matrix
from methods.sia import self_information, sia_attention
from methods.spsl import SPSL, phase_only
from methods.srm import SRMFilter, srm_kernels


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


# ---------------------------------------------------------------- F3Net
@pytest.mark.parametrize("n", [8, 10, 64])
def test_f3net_dct_basis_is_orthonormal_dct_ii(n):
    d = dct_matrix(n).double()
    assert torch.allclose(d @ d.T, torch.eye(n, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(d[0], torch.full((n,), 1 / math.sqrt(n), dtype=torch.float64), atol=1e-7)
    ref = scipy.fft.dct(np.eye(n), type=2, norm="ortho", axis=0)  # columns = DCT of unit vectors
    assert np.allclose(d.numpy(), ref, atol=1e-6)


def test_f3net_band_masks_partition_the_spectrum():
    m = band_masks(64, [(0, 1 / 16), (1 / 16, 1 / 8), (1 / 8, 1)])
    assert torch.equal(m.sum(0), torch.ones(64, 64))  # every coefficient in exactly one band
    assert set(m.unique().tolist()) == {0.0, 1.0}
    # i + j <= 126/16 = 7.875 -> sums 0..7: 1+2+...+8 = 36 coefficients; middle: sums 8..15 -> 9+...+16 = 100
    assert m[0].sum() == 36 and m[1].sum() == 100 and m[2].sum() == 64 * 64 - 136
    assert m[0, 0, 0] == 1 and m[0, 7, 0] == 1 and m[1, 8, 0] == 1 and m[2, 63, 63] == 1
    with pytest.raises(benchmark.errors.UserError, match="contiguous"):
        band_masks(8, [(0, 0.2), (0.3, 1)])


def test_f3net_fad_bands_sum_back_to_the_image_when_filters_are_zero():
    torch.manual_seed(0)
    fad = FAD(16, [(0, 1 / 16), (1 / 16, 1 / 8), (1 / 8, 1)])
    with torch.no_grad():
        fad.learn.zero_()  # sigma(0) = 0: only the base masks, which partition the spectrum
    x = torch.rand(2, 3, 16, 16)
    out = fad(x)
    assert out.shape == (2, 9, 16, 16)
    assert torch.allclose(out.view(2, 3, 3, 16, 16).sum(1), x, atol=1e-5)
    assert fad.learn.requires_grad and not any(b.requires_grad for b in fad.buffers())


def test_f3net_fad_runs_at_another_input_size():
    torch.manual_seed(0)
    fad = FAD(16, [(0, 1 / 16), (1 / 16, 1 / 8), (1 / 8, 1)])
    x = torch.rand(1, 3, 24, 24)
    fad(x).sum().backward()
    assert fad.learn.grad is not None and fad.learn.grad.abs().sum() > 0  # resized filters still learn
    with torch.no_grad():
        fad.learn.zero_()
        assert torch.allclose(fad(x).view(1, 3, 3, 24, 24).sum(1), x, atol=1e-5)  # 24-point bands partition
    with pytest.raises(benchmark.errors.UserError, match="square"):
        fad(torch.rand(1, 3, 16, 24))


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
def test_sia_self_information_by_hand():
    f = torch.tensor([0.0, math.log(3.0)]).view(1, 1, 1, 2)
    # p = softmax = [1/4, 3/4] -> I = -log p = [ln 4, ln 4/3]
    assert torch.allclose(self_information(f), torch.tensor([math.log(4), math.log(4 / 3)]).view(1, 1, 1, 2))
    g = torch.tensor([0.0, math.log(3.0), 0.0]).view(1, 1, 1, 3)
    # 3x3 window (zero-padded outside): sums of exp are 1+3, 1+3+1, 3+1
    want = torch.tensor([math.log(4), math.log(5 / 3), math.log(4)]).view(1, 1, 1, 3)
    assert torch.allclose(self_information(g, window=3), want, atol=1e-6)


def test_sia_attention_by_hand():
    f = torch.tensor([[0.0, math.log(3.0)], [1.0, 1.0]]).view(1, 2, 1, 2)
    # I: channel 0 [ln4, ln(4/3)], channel 1 [ln2, ln2]
    # spatial = channel mean / its max = [1, (ln(4/3) + ln2) / (ln4 + ln2)] = [1, ln(8/3) / ln 8]
    a1 = math.log(8 / 3) / math.log(8)
    # channel weights: softmax([2 ln2 - ln3 / 2, ln2]) * 2 = [4 (2 - sqrt3), 2 - 4 (2 - sqrt3)]
    w0 = 4 * (2 - math.sqrt(3))
    w1 = 2 - w0
    want = torch.tensor([[0.0, math.log(3) * (1 + a1 * w0)], [1 + w1, 1 + a1 * w1]]).view(1, 2, 1, 2)
    assert torch.allclose(sia_attention(f), want, atol=1e-6)


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
