"""F3Net: frequency-aware decomposition + local frequency statistics, fused by MixBlocks.

Paper: Y. Qian, G. Yin, L. Sheng, Z. Chen, J. Shao, "Thinking in Frequency: Face Forgery
Detection by Mining Frequency-aware Clues", ECCV 2020.

Mechanism kept:
- FAD (frequency-aware decomposition): the whole image's 2-D DCT ``D x D^T`` (orthonormal DCT-II
  matrix D, a fixed buffer) is filtered by band masks ``f_base + sigma(f_w)`` (binary base
  masks, fixed buffers, on the anti-diagonal index i+j: low, middle, high; learnable f_w,
  sigma(x) = (1 - e^-x) / (1 + e^-x)) and transformed back, per colour channel; the bands are
  concatenated (3 x bands channels) and fed to the first stream.
- LFS (local frequency statistics): a sliding ``window`` x ``window`` DCT (stride ``stride``) of
  the grey image; per frequency band m of ``lfs_bands`` equal bands of i+j,
  q_m = log10(|| |D p| * |h_base_m + sigma(h_w_m)| ||_1 + eps) with learnable h_w; the
  ``lfs_bands``-channel map is fed to the second stream.
- Two streams of the same backbone; a MixBlock (cross attention between the streams) after
  the stages in ``mix_stages``; pooled features of both streams concatenated -> linear head;
  cross-entropy (binary: BCE on the fake logit).

Original default backbone: Xception (``legacy_xception`` in timm) at 299 px, both streams.

Deviations from the original:
- the two streams are timm backbones cut at their feature stages (methods/_staged.py); MixBlocks
  sit after the stages given in ``mix_stages`` (default: the 1/16 stage and the last one; the
  paper: Xception's middle-flow block 7 and block 12);
- MixBlock (our reading of Fig. 2): 1x1 query convs of both streams -> concat -> BN, ReLU,
  1x1 conv -> two sigmoid spatial maps; each stream adds gamma * (map * other stream), with a
  learnable gamma per stream starting at 0;
- ``input_size`` is the side of the learnable FAD filters (the paper's: 299); an input of another
  side uses the DCT and base masks of its own size and the learnable filters resized bilinearly
  (the paper trains at one fixed size); set it to ``extract.size`` to learn at full resolution;
- the LFS map (smaller than the image: (S - window) / stride + 1 per side) is resized
  bilinearly to the input size so both streams share their stage resolutions;
- the FAD bands are fractions of the anti-diagonal index range [0, 2(S-1)] (low: first 1/16,
  middle: 1/16-1/8, high: the rest); the paper names the fractions, not the index;
- random initialisation unless ``pretrained`` (a local file, loaded into both streams).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import UserError
from benchmark.method import Method
from benchmark.registry import METHODS
from methods._staged import Staged

PAPER_BACKBONE, PAPER_INPUT_SIZE = "legacy_xception", 299
GREY = (0.299, 0.587, 0.114)


def dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix: D[k, i] = a_k cos(pi (2i + 1) k / 2n), a_0 = sqrt(1/n), a_k = sqrt(2/n)."""
    k = torch.arange(n, dtype=torch.float64).view(-1, 1)
    i = torch.arange(n, dtype=torch.float64).view(1, -1)
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.float()


def band_masks(n: int, bands) -> torch.Tensor:
    """(len(bands), n, n) binary masks: band b holds (i, j) with lo < (i + j) / (2(n-1)) <= hi (b=0 also holds 0)."""
    bands = [tuple(float(v) for v in b) for b in bands]
    if bands[0][0] != 0 or bands[-1][1] != 1 or any(a[1] != b[0] for a, b in zip(bands, bands[1:])):
        raise UserError(f"f3net bands {bands} must be contiguous fractions from 0 to 1")
    r = (torch.arange(n).view(-1, 1) + torch.arange(n).view(1, -1)).float() / max(2 * (n - 1), 1)
    masks = [((r > lo) | (r == 0) & (b == 0)) & (r <= hi) for b, (lo, hi) in enumerate(bands)]
    return torch.stack(masks).float()


def _sigma(x: torch.Tensor) -> torch.Tensor:
    return (1 - torch.exp(-x)) / (1 + torch.exp(-x))


class FAD(nn.Module):
    """Learnable band filters of ``size`` x ``size``; another input side S gets the S-point DCT,
    base masks recomputed at S, and the learnable part resized bilinearly to S x S."""

    def __init__(self, size: int, bands):
        super().__init__()
        self.bands = [tuple(b) for b in bands]
        self.register_buffer("dct", dct_matrix(size))
        self.register_buffer("base", band_masks(size, self.bands))
        self.learn = nn.Parameter(0.1 * torch.randn(len(self.bands), size, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, S, S) -> (N, 3 * bands, S, S)
        side = x.shape[-1]
        if x.shape[-2] != side:
            raise UserError(f"f3net needs square input, got {tuple(x.shape[-2:])}")
        if side == self.dct.shape[0]:
            d, base, learn = self.dct, self.base, self.learn
        else:
            d, base = dct_matrix(side).to(x), band_masks(side, self.bands).to(x)
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
        edges = torch.linspace(0, 1, bands + 1).tolist()
        self.register_buffer("base", band_masks(window, list(zip(edges[:-1], edges[1:]))))
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
    def __init__(self, c: int):
        super().__init__()
        r = max(c // 8, 4)
        self.qa, self.qb = nn.Conv2d(c, r, 1), nn.Conv2d(c, r, 1)
        self.att = nn.Sequential(nn.BatchNorm2d(2 * r), nn.ReLU(), nn.Conv2d(2 * r, 2, 1))
        self.gamma = nn.Parameter(torch.zeros(2))

    def forward(self, a: torch.Tensor, b: torch.Tensor):
        m = torch.sigmoid(self.att(torch.cat([self.qa(a), self.qb(b)], 1)))
        return a + self.gamma[0] * m[:, :1] * b, b + self.gamma[1] * m[:, 1:] * a


@METHODS.register_module(name="f3net")
class F3Net(Method):
    paper_setting = {"backbone": PAPER_BACKBONE, "input_size": PAPER_INPUT_SIZE}
    paper_input_size = PAPER_INPUT_SIZE

    def __init__(self, backbone: str = PAPER_BACKBONE, pretrained: str | None = None,
                 input_size: int = PAPER_INPUT_SIZE, bands=((0, 1 / 16), (1 / 16, 1 / 8), (1 / 8, 1)),
                 lfs_window: int = 10, lfs_stride: int = 2, lfs_bands: int = 6, mix_stages=(-2, -1)):
        super().__init__()
        self.backbone_name, self.input_size = backbone, int(input_size)
        self.fad = FAD(self.input_size, bands)
        self.lfs = LFS(lfs_window, lfs_stride, lfs_bands)
        self.fad_stream = Staged(backbone, 3 * len(bands), pretrained)
        self.lfs_stream = Staged(backbone, lfs_bands, pretrained)
        self.weights = self.fad_stream.weights
        n = len(self.fad_stream)
        self.mix_at = sorted({int(s) % n for s in mix_stages})
        self.mix = nn.ModuleDict({str(i): MixBlock(self.fad_stream.channels[i]) for i in self.mix_at})
        self.head = nn.Linear(2 * self.fad_stream.channels[-1], 1)

    def forward(self, batch: dict) -> dict:
        x = self.normalize(batch["image"])
        a = self.fad(x)
        b = F.interpolate(self.lfs(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        for i, (sa, sb) in enumerate(zip(self.fad_stream.stages, self.lfs_stream.stages)):
            a, b = sa(a), sb(b)
            if i in self.mix_at:
                a, b = self.mix[str(i)](a, b)
        feat = torch.cat([a.mean((-1, -2)), b.mean((-1, -2))], 1)
        return {"logit": self.head(feat).squeeze(1)}

    def provenance(self) -> dict:
        return {"backbone": self.backbone_name, "weights": self.weights}
