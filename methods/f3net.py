"""F3Net: frequency-aware decomposition + local frequency statistics, fused by MixBlocks.

Paper: Y. Qian, G. Yin, L. Sheng, Z. Chen, J. Shao, "Thinking in Frequency: Face Forgery
Detection by Mining Frequency-aware Clues", ECCV 2020. The authors released no code; facts on
the widely used reimplementation (yyk-wew/F3Net, which DeepfakeBench's F3Net follows) were read,
nothing copied.

Mechanism kept:
- FAD (frequency-aware decomposition): the whole image's 2-D DCT ``D x D^T`` (orthonormal DCT-II
  matrix D, a fixed buffer) is filtered by four band masks ``f_base + sigma(f_w)`` (binary base
  masks on the anti-diagonal index i + j, fixed buffers; learnable f_w ~ N(0, 0.1),
  sigma(x) = (1 - e^-x) / (1 + e^-x) = 2 sigmoid(x) - 1) and transformed back, per colour
  channel: low, middle and high bands plus the all-pass band, 4 x 3 = 12 channels for the first
  stream. The paper's bands are fractions of the spectrum's *area*: the first 1/16, 1/16 to 1/8,
  the remaining 7/8; ``fad_bands`` chooses how the edges are drawn (``fad_masks``):
  ``release`` (default): the reimplementation's i + j <= S // 2.82 (low), S // 2.82 <= i + j <= S // 2
  (middle), i + j >= S // 2 (high), each edge diagonal in both bands it separates; at S = 299 the
  low band holds 6.5 % and the middle 6.3 % of the coefficients;
  ``area``: the largest triangles i + j <= e holding at most 1/16 and 1/8 of the S^2
  coefficients, bands partitioning the spectrum;
- LFS (local frequency statistics): a sliding ``window`` x ``window`` DCT (stride ``stride``) of
  the grey image; per frequency band m of ``lfs_bands`` equal bands of i+j,
  q_m = log10(|| |D p| * |h_base_m + sigma(h_w_m)| ||_1 + eps) with learnable h_w (the paper's
  formula); the ``lfs_bands``-channel map is fed to the second stream;
- two streams of the same backbone and a MixBlock between them after the stages in
  ``mix_stages`` (``MixBlock``): per channel, query and key maps (1x1 convs) of both streams,
  energy = Q_fad K_fad^T + Q_lfs K_lfs^T (an H x H matrix per channel), softmax over its last
  axis; each stream adds BN(depthwise 1x1 conv(other stream * attention * (2 sigmoid(gamma) - 1)))
  with a learnable gamma per stream starting at 0 (the product is elementwise on the square map,
  as the reimplementation does); pooled (ReLU, average) features of both streams concatenated ->
  dropout 0.2 -> linear head.

Original default backbone: Xception (``legacy_xception`` in timm) at 299 px, both streams; its
MixBlocks sit after Xception block 7 (the middle of the 1/16-stride middle flow, 728 channels)
and after the last conv (the 1/32 map, 2048 channels). Mapped onto a timm backbone cut at its
feature stages (methods/_staged.py), ``mix_stages: [-2, -1]`` puts them after the 1/16 stage and
after the last (1/32) stage; the default backbone (``test_resnet``, one block per stage) has no
block in the middle of its 1/16 stage, and on ``legacy_xception`` the 1/16 stage ends after
block 11. The original's recipe (``recipe``, DeepfakeBench): Adam lr 2e-4, weight decay 5e-4,
batch 32, 10 epochs.

Deviations from the original:
- ``input_size`` is the side of the learnable FAD filters (the paper's: 299); an input of another
  side uses the DCT and base masks of its own size and the learnable filters resized bilinearly
  (the paper trains at one fixed size); set it to ``extract.size`` to learn at full resolution;
- LFS: the reimplementation takes log10(|D p| + eps) before a band average normalised by the band's
  size, pads the image by 4 and rescales grey to 0-255; here the paper's formula on the
  normalised grey image, no padding; the LFS map (smaller than the image:
  (S - window) / stride + 1 per side) is resized bilinearly to the input size so both streams
  share their stage resolutions (the original's LFS Xception skips the first stride instead);
- MixBlock positions as mapped above;
- one fake logit with binary cross-entropy instead of a two-way softmax;
- random initialisation unless ``pretrained`` (a local file, loaded into both streams; the
  original starts from ImageNet weights, its first convs averaged over the extra channels).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import UserError
from benchmark.method import Method
from benchmark.registry import METHODS
from methods._recipes import deepfakebench
from methods._staged import Staged

PAPER_BACKBONE, PAPER_INPUT_SIZE = "legacy_xception", 299
GREY = (0.299, 0.587, 0.114)
FAD_RULES = ("release", "area")
AREA_FRACTIONS = (1 / 16, 1 / 8)  # the paper's low / middle band limits, as shares of the spectrum


def dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix: D[k, i] = a_k cos(pi (2i + 1) k / 2n), a_0 = sqrt(1/n), a_k = sqrt(2/n)."""
    k = torch.arange(n, dtype=torch.float64).view(-1, 1)
    i = torch.arange(n, dtype=torch.float64).view(1, -1)
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.float()


def _diagonal(n: int) -> torch.Tensor:
    return torch.arange(n).view(-1, 1) + torch.arange(n).view(1, -1)


def area_edge(n: int, fraction: float) -> int:
    """The largest e with #{(i, j): i + j <= e} = (e + 1)(e + 2) / 2 <= fraction * n^2 (e <= n - 1)."""
    e = int(math.floor((math.sqrt(1 + 8 * fraction * n * n) - 3) / 2))
    while (e + 2) * (e + 3) / 2 <= fraction * n * n and e + 1 <= n - 1:
        e += 1
    return max(e, 0)


def fad_masks(n: int, rule: str = "release") -> torch.Tensor:
    """(4, n, n) binary FAD base masks on i + j: low, middle, high, all (see the module docstring)."""
    if rule not in FAD_RULES:
        raise UserError(f"f3net fad_bands={rule!r} is unknown; choose one of {FAD_RULES}")
    r = _diagonal(n)
    if rule == "release":  # inclusive edges at S // 2.82 and S // 2, as the reimplementation draws them
        lo, mid = math.floor(n / 2.82), math.floor(n / 2)
        bands = [r <= lo, (r >= lo) & (r <= mid), r >= mid]
    else:
        lo, mid = (area_edge(n, f) for f in AREA_FRACTIONS)
        bands = [r <= lo, (r > lo) & (r <= mid), r > mid]
    return torch.stack([*bands, torch.ones(n, n, dtype=torch.bool)]).float()


def index_bands(n: int, k: int) -> torch.Tensor:
    """(k, n, n) binary masks of k equal shares of the index i + j in [0, 2(n - 1)] (LFS bands)."""
    r = _diagonal(n).float() / max(2 * (n - 1), 1)
    edges = torch.linspace(0, 1, k + 1)
    return torch.stack([((r > a) | (r == 0) & (b == 0)) & (r <= e)
                        for b, (a, e) in enumerate(zip(edges[:-1], edges[1:]))]).float()


def _sigma(x: torch.Tensor) -> torch.Tensor:
    return (1 - torch.exp(-x)) / (1 + torch.exp(-x))


class FAD(nn.Module):
    """Learnable band filters of ``size`` x ``size``; another input side S gets the S-point DCT,
    base masks recomputed at S, and the learnable part resized bilinearly to S x S."""

    def __init__(self, size: int, rule: str = "release"):
        super().__init__()
        self.rule = rule
        self.register_buffer("dct", dct_matrix(size))
        self.register_buffer("base", fad_masks(size, rule))
        self.learn = nn.Parameter(0.1 * torch.randn(len(self.base), size, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, S, S) -> (N, 3 * 4, S, S)
        side = x.shape[-1]
        if x.shape[-2] != side:
            raise UserError(f"f3net needs square input, got {tuple(x.shape[-2:])}")
        if side == self.dct.shape[0]:
            d, base, learn = self.dct, self.base, self.learn
        else:
            d, base = dct_matrix(side).to(x), fad_masks(side, self.rule).to(x)
            learn = F.interpolate(self.learn[None], size=(side, side), mode="bilinear", align_corners=False)[0]
        spec = d @ x @ d.T
        filt = base + _sigma(learn)  # (B, S, S)
        parts = d.T @ (spec.unsqueeze(1) * filt.unsqueeze(1)) @ d  # (N, B, 3, S, S)
        return parts.flatten(1, 2)


class LFS(nn.Module):
    def __init__(self, window: int, stride: int, bands: int):
        super().__init__()
        self.window, self.stride = window, stride
        self.register_buffer("dct", dct_matrix(window))
        self.register_buffer("base", index_bands(window, bands))
        self.learn = nn.Parameter(0.1 * torch.randn(bands, window, window))
        self.register_buffer("grey", torch.tensor(GREY).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, S, S) -> (N, bands, S', S')
        g = (x * self.grey).sum(1, keepdim=True)
        n, side = x.shape[0], (x.shape[-1] - self.window) // self.stride + 1
        patches = F.unfold(g, self.window, stride=self.stride).transpose(1, 2)  # (N, L, w*w)
        p = patches.reshape(n, -1, self.window, self.window)
        spec = (self.dct @ p @ self.dct.T).abs().unsqueeze(2)  # (N, L, 1, w, w)
        weight = (self.base + _sigma(self.learn)).abs()  # (M, w, w)
        q = torch.log10((spec * weight).sum((-1, -2)) + 1e-6)  # (N, L, M)
        return q.transpose(1, 2).reshape(n, -1, side, side)


class MixBlock(nn.Module):
    """Cross attention between the FAD and LFS streams (see the module docstring)."""

    def __init__(self, c: int):
        super().__init__()
        self.q = nn.ModuleList([nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)])
        self.k = nn.ModuleList([nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)])
        self.out = nn.ModuleList([nn.Sequential(nn.Conv2d(c, c, 1, groups=c), nn.BatchNorm2d(c)) for _ in range(2)])
        self.gamma = nn.Parameter(torch.zeros(2))

    def attention(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(N, C, H, H): per channel softmax(Q_a K_a^T + Q_b K_b^T) over the last axis."""
        if a.shape[-1] != a.shape[-2]:
            raise UserError(f"f3net MixBlock needs square maps, got {tuple(a.shape[-2:])}")
        energy = self.q[0](a) @ self.k[0](a).transpose(-1, -2) + self.q[1](b) @ self.k[1](b).transpose(-1, -2)
        return torch.softmax(energy, dim=-1)

    def forward(self, a: torch.Tensor, b: torch.Tensor):
        att = self.attention(a, b)
        g = 2 * torch.sigmoid(self.gamma) - 1
        return a + self.out[0](b * att * g[1]), b + self.out[1](a * att * g[0])


@METHODS.register_module(name="f3net")
class F3Net(Method):
    paper_setting = {"backbone": PAPER_BACKBONE, "input_size": PAPER_INPUT_SIZE}
    paper_input_size = PAPER_INPUT_SIZE
    recipe = deepfakebench(batch_size=32, epochs=10)

    def __init__(self, backbone: str = PAPER_BACKBONE, pretrained: str | None = None,
                 input_size: int = PAPER_INPUT_SIZE, fad_bands: str = "release",
                 lfs_window: int = 10, lfs_stride: int = 2, lfs_bands: int = 6, mix_stages=(-2, -1),
                 dropout: float = 0.2):
        super().__init__()
        self.backbone_name, self.input_size = backbone, int(input_size)
        self.fad = FAD(self.input_size, fad_bands)
        self.lfs = LFS(lfs_window, lfs_stride, lfs_bands)
        self.fad_stream = Staged(backbone, 3 * len(self.fad.base), pretrained)
        self.lfs_stream = Staged(backbone, lfs_bands, pretrained)
        self.weights = self.fad_stream.weights
        self.use_input_stats(self.fad_stream)
        n = len(self.fad_stream)
        self.mix_at = sorted({int(s) % n for s in mix_stages})
        self.mix = nn.ModuleDict({str(i): MixBlock(self.fad_stream.channels[i]) for i in self.mix_at})
        self.drop = nn.Dropout(float(dropout))
        self.head = nn.Linear(2 * self.fad_stream.channels[-1], 1)

    def forward(self, batch: dict) -> dict:
        x = self.normalize(batch["image"])
        a = self.fad(x)
        b = F.interpolate(self.lfs(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        for i, (sa, sb) in enumerate(zip(self.fad_stream.stages, self.lfs_stream.stages)):
            a, b = sa(a), sb(b)
            if i in self.mix_at:
                a, b = self.mix[str(i)](a, b)
        feat = torch.cat([F.relu(a).mean((-1, -2)), F.relu(b).mean((-1, -2))], 1)
        return {"logit": self.head(self.drop(feat)).squeeze(1), "feature": feat}

    def provenance(self) -> dict:
        return {"backbone": self.backbone_name, "weights": self.weights}
