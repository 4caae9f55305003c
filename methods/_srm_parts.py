"""The layers of SRM (methods/srm.py, Luo et al. CVPR 2021): fixed SRM filters, the separate
(depthwise) SRM projection, the residual-guided pixel attention, dual cross-modality attention,
the fusion module and the AM-Softmax head. Only methods/srm.py imports this file."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import UserError

# Fridrich & Kodovsky (2012) SRM kernels, with their published normalisers.
SRM_KB = [[0, 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0], [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]]
SRM_KV = [[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]]
SRM_H2 = [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -2, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
AM_SOFTMAX_INPUTS = ("cosine", "logits")


def srm_kernels() -> torch.Tensor:
    """(3, 5, 5): KB/4, KV/12, H2/2."""
    return torch.stack([torch.tensor(SRM_KB) / 4.0, torch.tensor(SRM_KV) / 12.0, torch.tensor(SRM_H2) / 2.0]).float()


class SRMFilter(nn.Module):
    """Fixed SRM residuals. ``image`` mode: each kernel summed over the input channels (C -> 3);
    ``depthwise`` mode: each kernel on every channel (C -> 3C). Output truncated to [-t, t]."""

    def __init__(self, truncate: float = 3.0):
        super().__init__()
        self.register_buffer("kernels", srm_kernels().unsqueeze(1))  # (3, 1, 5, 5)
        self.truncate = truncate

    def image(self, x: torch.Tensor) -> torch.Tensor:
        w = self.kernels.expand(3, x.shape[1], 5, 5)
        return F.hardtanh(F.conv2d(x, w, padding=2), -self.truncate, self.truncate)

    def depthwise(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        w = self.kernels.repeat(c, 1, 1, 1)  # (3C, 1, 5, 5): channel i gets the three kernels
        return F.hardtanh(F.conv2d(x, w, padding=2, groups=c), -self.truncate, self.truncate)


class SeparateSRM(nn.Module):
    """Depthwise truncated SRM residuals of a feature map -> 1x1 conv + BN + ReLU."""

    def __init__(self, c_in: int, c_out: int, truncate: float = 3.0):
        super().__init__()
        self.srm = SRMFilter(truncate)
        self.proj = nn.Sequential(nn.Conv2d(3 * c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.srm.depthwise(x))


class PixelAttention(nn.Module):
    """Residual-guided spatial attention: SRM of the SRM input -> two convs -> a 7x7 conv over
    [channel mean, channel max] -> sigmoid, (N, 1, H/2, W/2)."""

    def __init__(self, truncate: float = 3.0):
        super().__init__()
        self.srm = SRMFilter(truncate)
        self.conv = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
                                  nn.Conv2d(32, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        self.spatial = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, srm: torch.Tensor) -> torch.Tensor:
        f = self.conv(self.srm.image(srm))
        return torch.sigmoid(self.spatial(torch.cat([f.mean(1, keepdim=True), f.amax(1, keepdim=True)], 1)))


class DCMA(nn.Module):
    """Dual cross-modality attention over ``positions`` = h x w locations (learned maps over them)."""

    def __init__(self, c: int, positions: int, ratio: int = 8):
        super().__init__()
        r = max(c // ratio, 1)
        self.key_a, self.key_b, self.key_shared = nn.Conv2d(c, r, 1), nn.Conv2d(c, r, 1), nn.Conv2d(r, r, 1)
        self.map_ab, self.map_ba = nn.Linear(positions, positions), nn.Linear(positions, positions)
        self.value_a, self.value_b = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)
        self.gamma = nn.Parameter(torch.zeros(2))
        self.positions = positions

    def forward(self, a: torch.Tensor, b: torch.Tensor):
        n, c, h, w = a.shape
        if h * w != self.positions:
            raise UserError(f"DCMA was built for {self.positions} positions, got {h}x{w}")
        ka = self.key_shared(self.key_a(a)).flatten(2).transpose(1, 2)  # (N, HW, r)
        kb = self.key_shared(self.key_b(b)).flatten(2)  # (N, r, HW)
        energy = ka @ kb  # (N, HW_a, HW_b)
        att_b_on_a = torch.softmax(self.map_ab(energy), dim=-1)
        att_a_on_b = torch.softmax(self.map_ba(energy.transpose(1, 2)), dim=-1)
        out_a = (self.value_b(b).flatten(2) @ att_b_on_a.transpose(1, 2)).view(n, c, h, w)
        out_b = (self.value_a(a).flatten(2) @ att_a_on_b.transpose(1, 2)).view(n, c, h, w)
        return a + self.gamma[0] * out_a, b + self.gamma[1] * out_b


class Fusion(nn.Module):
    """concat -> 1x1 conv + BN + ReLU -> times channel attention -> ReLU -> average pool, (N, C)."""

    def __init__(self, c_in: int, c_out: int, ratio: int = 16):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())
        r = max(c_out // ratio, 1)
        self.mlp = nn.Sequential(nn.Conv2d(c_out, r, 1, bias=False), nn.ReLU(), nn.Conv2d(r, c_out, 1, bias=False))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        f = self.block(torch.cat([a, b], 1))
        att = torch.sigmoid(self.mlp(F.adaptive_avg_pool2d(f, 1)) + self.mlp(F.adaptive_max_pool2d(f, 1)))
        return F.relu(f * att).mean((-1, -2))


def am_softmax_loss(cos: torch.Tensor, label: torch.Tensor, margin: float, scale: float) -> torch.Tensor:
    """CE(s (cos - m [k = y])) over the (N, K) class scores ``cos``."""
    onehot = F.one_hot(label.long(), cos.shape[1]).to(cos.dtype)
    return F.cross_entropy(scale * (cos - margin * onehot), label.long())


class AMSoftmaxHead(nn.Module):
    """Two class scores: cosines to learned class directions (``cosine``) or a linear layer's
    outputs (``logits``); forward gives the fake logit, ``loss`` the AM-Softmax loss."""

    def __init__(self, dim: int, mode: str = "cosine", margin: float = 0.45, scale: float = 30.0):
        super().__init__()
        if mode not in AM_SOFTMAX_INPUTS:
            raise UserError(f"srm am_softmax={mode!r} is unknown; choose one of {AM_SOFTMAX_INPUTS}")
        self.mode, self.margin, self.scale = mode, float(margin), float(scale)
        self.linear = nn.Linear(dim, 2, bias=mode == "logits")

    def scores(self, feat: torch.Tensor) -> torch.Tensor:
        if self.mode == "logits":
            return self.linear(feat)
        return F.normalize(feat, dim=1) @ F.normalize(self.linear.weight, dim=1).T

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        s = self.scores(feat)
        return (s[:, 1] - s[:, 0]) * (self.scale if self.mode == "cosine" else 1.0)

    def loss(self, feat: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return am_softmax_loss(self.scores(feat), label, self.margin, self.scale)
