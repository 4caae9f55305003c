"""SIA: self-information attention over feature maps.

Paper: K. Sun, H. Liu, T. Yao, X. Sun, S. Chen, S. Ding, R. Ji, "An Information Theoretic
Approach for Attention-Driven Face Forgery Detection", ECCV 2022.

Mechanism kept: the self-information of each feature, I = -log p, with p the softmax of a
channel's responses over the spatial positions of the map (``self_information``), tells how
surprising (informative) a location is; after each stage in ``at_stages`` the feature map f is
re-weighted by a spatial self-information map (the channel-mean of I, divided by its spatial
maximum) and a channel self-information weight (softmax over channels of the spatial mean of
I, times C, so the weights average 1): f' = f + f * A_spatial * A_channel (residual). The
re-weighted map feeds the next stage; pooled last stage -> linear head; binary cross-entropy.

Original default backbone: EfficientNet-B4 (``efficientnet_b4`` in timm). The cost table's
paper input size, 320 px, is our assumption (the paper text was not available here).

Deviations from the original:
- the attention has no learnable parameters here (the paper's normalisation layers around
  it are not reproduced); p is a softmax over the whole map (``window: null``, our reading of
  "probability of a feature in its context") or over a ``window`` x ``window`` neighbourhood;
- the paper's self-information dynamic dense connection (multi-level aggregation) is left
  out; SIA acts after the stages in ``at_stages`` (default: the 1/8, 1/16 and 1/32 stages);
- one fake logit with binary cross-entropy; random initialisation unless ``pretrained``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.method import Method
from benchmark.registry import METHODS
from methods._staged import Staged

PAPER_BACKBONE, PAPER_INPUT_SIZE = "efficientnet_b4", 320


def self_information(f: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """-log softmax of each channel over its spatial positions (all, or a window x window neighbourhood)."""
    if window is None:
        return torch.logsumexp(f.flatten(2), dim=-1)[..., None, None] - f
    m = f.amax((-1, -2), keepdim=True).detach()
    e = torch.exp(f - m)
    pad = window // 2
    local_sum = F.avg_pool2d(e, window, stride=1, padding=pad, count_include_pad=True) * window * window
    return torch.log(local_sum[..., : f.shape[-2], : f.shape[-1]]) + m - f


def sia_attention(f: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """f + f * A_spatial * A_channel from the self-information of f (see the module docstring)."""
    info = self_information(f, window)
    spatial = info.mean(1, keepdim=True)
    spatial = spatial / spatial.amax((-1, -2), keepdim=True).clamp_min(1e-12)
    channel = torch.softmax(info.mean((-1, -2)), dim=1)[..., None, None] * f.shape[1]
    return f + f * spatial * channel


@METHODS.register_module(name="sia")
class SIA(Method):
    paper_setting = {"backbone": PAPER_BACKBONE}
    paper_input_size = PAPER_INPUT_SIZE

    def __init__(self, backbone: str = PAPER_BACKBONE, pretrained: str | None = None,
                 at_stages=(-3, -2, -1), window: int | None = None):
        super().__init__()
        self.backbone_name = backbone
        self.net = Staged(backbone, 3, pretrained)
        self.weights = self.net.weights
        n = len(self.net)
        self.at = sorted({int(s) % n for s in at_stages})
        self.window = window
        self.head = nn.Linear(self.net.channels[-1], 1)

    def forward(self, batch: dict) -> dict:
        x = self.normalize(batch["image"])
        for i, stage in enumerate(self.net.stages):
            x = stage(x)
            if i in self.at:
                x = sia_attention(x, self.window)
        return {"logit": self.head(x.mean((-1, -2))).squeeze(1)}

    def provenance(self) -> dict:
        return {"backbone": self.backbone_name, "weights": self.weights}
