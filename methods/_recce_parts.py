"""The layers of RECCE (methods/recce.py, Cao et al. CVPR 2022): the real-face decoder, the graph
reasoning between encoder and decoder scales, and the reconstruction-guided attention. Only
methods/recce.py imports this file."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    """Two 3x3 conv + BN, a residual connection, ReLU (stands in for Xception's separable Block)."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                                  nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


def up_block(a: int, b: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(a, b, 3, padding=1, bias=False),
                         nn.BatchNorm2d(b), nn.ReLU(inplace=True))


class Decoder(nn.Module):
    """From the stride-16 encoder map: x2 -> stride 8 (``d8``), x2 -> stride 4 (``d4``), x2 ->
    stride 2 -> 1x1 conv -> tanh, resized (bilinear) to the input: the reconstruction in [-1, 1]."""

    def __init__(self, c_in: int, width: int = 64, drop: float = 0.2):
        super().__init__()
        w8, w4, w2 = width, max(width // 2, 8), max(width // 4, 8)
        self.drop = nn.Dropout(drop)
        self.to8, self.res8 = up_block(c_in, w8), ResBlock(w8)
        self.to4, self.res4 = up_block(w8, w4), ResBlock(w4)
        self.to2 = up_block(w4, w2)
        self.to_img = nn.Sequential(nn.Conv2d(w2, 3, 1, bias=False), nn.Tanh())
        self.widths = (w8, w4)

    def forward(self, f16: torch.Tensor, size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        d8 = self.res8(self.to8(self.drop(f16)))
        d4 = self.res4(self.to4(d8))
        recon = self.to_img(self.to2(d4))
        return d8, d4, F.interpolate(recon, size=size, mode="bilinear", align_corners=True)


def _mlp(a: int, d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(a, d, bias=False), nn.ReLU(inplace=True), nn.Linear(d, d, bias=False))


class GraphReasoning(nn.Module):
    """Graph reasoning: each stride-16 location (vertex a) aggregates the decoder locations under
    it, the 2 x 2 stride-8 ones (vertices b) and the 4 x 4 stride-4 ones (vertices c),
    weighted by a softmax over those neighbours of a learned score of [a, neighbour], gated by
    1 - sigmoid(conv(a)); [agg_b, agg_c, a] -> sigmoid -> 1x1 conv, ReLU, 1x1 conv -> dropout:
    (N, C_a, h, w), added to the encoder map by the caller."""

    def __init__(self, c_a: int, c_b: int, c_c: int, dim: int, drop: float = 0.2):
        super().__init__()
        self.emb_a = nn.Sequential(nn.Conv2d(c_a, dim, 1, bias=False), nn.ReLU(inplace=True), nn.Conv2d(dim, dim, 1, bias=False))
        self.gate_b, self.gate_c = nn.Conv2d(c_a, dim, 1, bias=False), nn.Conv2d(c_a, dim, 1, bias=False)
        self.emb_b, self.emb_c = _mlp(c_b, dim), _mlp(c_c, dim)
        self.score_b, self.score_c = nn.Linear(2 * dim, 1, bias=False), nn.Linear(2 * dim, 1, bias=False)
        self.reproject = nn.Sequential(nn.Conv2d(3 * dim, c_a, 1, bias=False), nn.ReLU(inplace=True),
                                       nn.Conv2d(c_a, c_a, 1, bias=False), nn.Dropout(drop))

    @staticmethod
    def _aggregate(a: torch.Tensor, v: torch.Tensor, ratio: int, emb, score, gate: torch.Tensor) -> torch.Tensor:
        """a (N, L, D) vertices; v (N, C, r h, r w) -> (N, L, D) gated aggregation of each a's r x r neighbours."""
        n, c = v.shape[:2]
        nb = F.unfold(v, ratio, stride=ratio).view(n, c, ratio * ratio, -1).permute(0, 2, 3, 1)  # (N, r^2, L, C)
        e = emb(nb)  # (N, r^2, L, D)
        w = torch.softmax(F.relu(score(torch.cat([a.unsqueeze(1).expand_as(e), e], -1))), dim=1)
        return (e * w).sum(1) * gate

    def forward(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        n, _, h, w = a.shape
        ea = self.emb_a(a).flatten(2).transpose(1, 2)  # (N, L, D)
        gb = 1 - torch.sigmoid(self.gate_b(a)).flatten(2).transpose(1, 2)
        gc = 1 - torch.sigmoid(self.gate_c(a)).flatten(2).transpose(1, 2)
        agg_b = self._aggregate(ea, b, b.shape[-1] // w, self.emb_b, self.score_b, gb)
        agg_c = self._aggregate(ea, c, c.shape[-1] // w, self.emb_c, self.score_c, gc)
        nodes = torch.sigmoid(torch.cat([agg_b, agg_c, ea], -1)).transpose(1, 2).reshape(n, -1, h, w)
        return self.reproject(nodes)


class GuidedAttention(nn.Module):
    """Reconstruction-guided attention: map = sigmoid(1x1 conv(ReLU(3x3 conv(|x - x_hat|))))
    at the feature map's size; out = map * (1x1 conv + BN + ReLU)(f) + dropout(f)."""

    def __init__(self, c: int, drop: float = 0.2):
        super().__init__()
        self.gated = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                                   nn.Conv2d(3, 1, 1, bias=False), nn.Sigmoid())
        self.h = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, recon: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        residual = F.interpolate((x - recon).abs(), size=f.shape[-2:], mode="bilinear", align_corners=True)
        return self.gated(residual) * self.h(f) + self.drop(f)
