"""SPSL: spatial-phase shallow learning.

Paper: H. Liu, X. Li, W. Zhou, Y. Chen, Y. He, H. Xue, W. Zhang, N. Yu, "Spatial-Phase Shallow
Learning: Rethinking Face Forgery Detection in Frequency Domain", CVPR 2021.

Mechanism kept: the phase spectrum of the input, as its phase-only reconstruction
``real(IFFT2(exp(i * angle(FFT2(grey)))))`` (the magnitude set to one; a fixed transform with no
parameters, the grey weights a buffer), is stacked with the RGB image as a fourth channel and
fed to the backbone, whose first conv takes 4 channels. "Shallow": the paper argues the phase
cue is local (up-sampling artefacts) and favours a small receptive field; ``stages`` keeps only
the first n feature stages of the backbone (null = all).

Original default backbone: Xception (``legacy_xception`` in timm) at 299 px. The original's
recipe (``recipe``, DeepfakeBench): Adam lr 2e-4, weight decay 5e-4, batch 32, 10 epochs.

Deviations from the original:
- ``stages: null`` (the whole backbone) by default: the paper's shallow setting is described
  qualitatively; set ``stages`` (e.g. 3) to cut the network after that many feature stages;
- the phase channel is standardised per image (zero mean, unit std) so its scale matches
  the normalised RGB channels (the raw reconstruction has std ~ 1/side); ``standardise_phase``;
- the phase is computed on the grey image (ITU-R 601 weights; DeepfakeBench averages the three
  channels), not per colour channel;
- one fake logit with binary cross-entropy instead of a two-way softmax; random
  initialisation unless ``pretrained`` (local file; timm adapts the first conv to 4 channels).
"""
from __future__ import annotations

import torch
from torch import nn

from benchmark.method import Method
from benchmark.registry import METHODS
from methods._recipes import deepfakebench
from methods._staged import Staged

PAPER_BACKBONE, PAPER_INPUT_SIZE = "legacy_xception", 299
GREY = (0.299, 0.587, 0.114)


def phase_only(x: torch.Tensor) -> torch.Tensor:
    """Phase-only reconstruction over the last two dims: real(IFFT2(exp(i * angle(FFT2(x)))))."""
    phase = torch.angle(torch.fft.fft2(x))
    return torch.fft.ifft2(torch.polar(torch.ones_like(phase), phase)).real


@METHODS.register_module(name="spsl")
class SPSL(Method):
    paper_setting = {"backbone": PAPER_BACKBONE}
    paper_input_size = PAPER_INPUT_SIZE
    recipe = deepfakebench(batch_size=32, epochs=10)

    def __init__(self, backbone: str = PAPER_BACKBONE, pretrained: str | None = None,
                 stages: int | None = None, standardise_phase: bool = True):
        super().__init__()
        self.backbone_name = backbone
        self.net = Staged(backbone, 4, pretrained)
        self.weights = self.net.weights
        self.use_input_stats(self.net)
        if stages is not None:
            self.net.stages = self.net.stages[: int(stages)]
        self.standardise = standardise_phase
        self.register_buffer("grey", torch.tensor(GREY).view(1, 3, 1, 1), persistent=False)
        self.head = nn.Linear(self.net.channels[len(self.net.stages) - 1], 1)

    def phase_channel(self, image: torch.Tensor) -> torch.Tensor:
        p = phase_only((image * self.grey).sum(1, keepdim=True))
        if self.standardise:
            p = (p - p.mean((-1, -2), keepdim=True)) / (p.std((-1, -2), keepdim=True) + 1e-6)
        return p

    def forward(self, batch: dict) -> dict:
        image = batch["image"]
        x = torch.cat([self.normalize(image), self.phase_channel(image)], 1)
        feat = self.net(x)[-1].mean((-1, -2))
        return {"logit": self.head(feat).squeeze(1), "feature": feat}

    def provenance(self) -> dict:
        return {"backbone": self.backbone_name, "weights": self.weights}
