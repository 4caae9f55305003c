"""SIA: self-information attention over feature maps.

Paper: K. Sun, H. Liu, T. Yao, X. Sun, S. Chen, S. Ding, R. Ji, "An Information Theoretic
Approach for Attention-Driven Face Forgery Detection", ECCV 2022. Facts also read from
DeepfakeBench's SIA detector (its SAIA module); nothing is copied.

Mechanism kept (``sia_distance``, ``sia_attention``): the self-information of a feature is
computed from how much it differs from its context, not from the activation itself. Per
channel c and position u of a map x:

- intra-channel distance: |sum over the 3 x 3 neighbourhood v of (x_c(u) - x_c(v))|
  (zero padding outside the map; the centre term is 0);
- inter-channel distance: |sum_{i=1..5} (x_c(u) - x_{c+i}(u))| (channel indices wrap around);
- d = intra + 0.5 inter (computed without gradient, as in the original);
- s = d / (2 mean d); p = exp(-s); self-information I = -log(p + 0.1);
- the map becomes x (1 + sigmoid(s)) (1 + mean_u I): a spatial weight from the normalised
  distance and a channel weight from the mean self-information.

It acts after the stages at strides ``at_strides`` (the original: 4, 8 and 16, i.e. after
EfficientNet-B4 blocks 5, 9 and 21), with the dense connections that carry each earlier map
s forward: for every later point, a 1x1 conv + BN + ReLU to that point's width, adaptive
max-pooled to its size, added to its features before its own attention. Pooled last stage ->
linear head.

Original default backbone: EfficientNet-B4 (``efficientnet_b4`` in timm) at 256 px (DeepfakeBench's
resolution). params.yaml uses TinyNet-E (``tinynet_e``, a scaled-down EfficientNet, 0.55 M
params): its feature stages have the same strides, so the three attention points sit at the
same relative depths. The original's recipe (``recipe``, DeepfakeBench): Adam lr 2e-4, weight
decay 5e-4, batch 32, 10 epochs, no schedule.

Deviations from the original:
- ``distance_mean: image`` (default): the mean of d that normalises s is taken per image; the
  original takes it over the whole batch tensor (``batch``), which makes a test score depend on
  the other images of its batch;
- the inter-channel term compares each channel with its next five; DeepfakeBench's code reshapes
  the stacked differences so that the five summed terms of an output channel come from different
  channels and shifts (a grouping artefact); the channel-wise reading here is the stated one;
- the backbone is timm's cut at its feature stages (methods/_staged.py): EfficientNet's final
  1x1 conv head (conv_head) is not run; the head pools the last stage directly;
- one fake logit with binary cross-entropy instead of a two-way softmax; random initialisation
  unless ``pretrained`` is a local file.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import UserError
from benchmark.method import Method
from benchmark.registry import METHODS
from methods._recipes import deepfakebench
from methods._staged import Staged

PAPER_BACKBONE, PAPER_INPUT_SIZE = "efficientnet_b4", 256
DISTANCE_MEANS = ("image", "batch")


@torch.no_grad()
def sia_distance(x: torch.Tensor, channels: int = 5) -> torch.Tensor:
    """d = intra + 0.5 inter (see the module docstring), (N, C, H, W), no gradient."""
    c = x.shape[1]
    box = F.conv2d(x, torch.ones(c, 1, 3, 3, dtype=x.dtype, device=x.device), padding=1, groups=c)
    intra = (9 * x - box).abs()
    idx = (torch.arange(c, device=x.device).view(-1, 1) + torch.arange(1, channels + 1, device=x.device)) % c
    inter = (channels * x - x[:, idx].sum(2)).abs()  # x[:, idx]: (N, C, channels, H, W)
    return intra + 0.5 * inter


def sia_attention(x: torch.Tensor, d: torch.Tensor, per_image: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(x (1 + sigmoid(s)) (1 + mean_u I), s) with s = d / (2 mean d), I = -log(exp(-s) + 0.1)."""
    mean = d.mean((1, 2, 3), keepdim=True) if per_image else d.mean()
    s = d / (2 * mean.clamp_min(1e-12))
    info = -torch.log(torch.exp(-s) + 0.1)
    return x * (1 + torch.sigmoid(s)) * (1 + info.mean((2, 3), keepdim=True)), s


def conv_bn_relu(a: int, b: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(a, b, 1), nn.BatchNorm2d(b), nn.ReLU(inplace=True))


@METHODS.register_module(name="sia")
class SIA(Method):
    paper_setting = {"backbone": PAPER_BACKBONE}
    paper_input_size = PAPER_INPUT_SIZE
    recipe = deepfakebench(batch_size=32, epochs=10)

    def __init__(self, backbone: str = PAPER_BACKBONE, pretrained: str | None = None,
                 at_strides=(4, 8, 16), inter_channels: int = 5, distance_mean: str = "image"):
        super().__init__()
        if distance_mean not in DISTANCE_MEANS:
            raise UserError(f"sia distance_mean={distance_mean!r} is unknown; choose one of {DISTANCE_MEANS}")
        self.backbone_name = backbone
        self.net = Staged(backbone, 3, pretrained)
        self.weights = self.net.weights
        self.use_input_stats(self.net)
        self.at = sorted({self.net.index(s) for s in at_strides})
        self.inter_channels, self.per_image = int(inter_channels), distance_mean == "image"
        ch = self.net.channels
        self.dense = nn.ModuleDict({f"{a}_{b}": conv_bn_relu(ch[a], ch[b])
                                    for i, a in enumerate(self.at) for b in self.at[i + 1:]})
        self.head = nn.Linear(ch[-1], 1)

    def forward(self, batch: dict) -> dict:
        x = self.normalize(batch["image"])
        maps = {}
        for i, stage in enumerate(self.net.stages):
            x = stage(x)
            if i in self.at:
                for a, s in maps.items():  # dense connections from every earlier attention point
                    x = x + F.adaptive_max_pool2d(self.dense[f"{a}_{i}"](s), x.shape[-2:])
                x, maps[i] = sia_attention(x, sia_distance(x, self.inter_channels), self.per_image)
        feat = x.mean((-1, -2))
        return {"logit": self.head(feat).squeeze(1), "feature": feat}

    def provenance(self) -> dict:
        return {"backbone": self.backbone_name, "weights": self.weights}
