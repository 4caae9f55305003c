"""Baseline: a timm backbone with a linear head (the "Baseline" row of Tab. 5 of the DPL paper).

Paper: none of its own; it is the "Baseline" setting of Zhang et al., "DPL: Cross-quality
DeepFake Detection via Dual Progressive Learning", ACCV 2024 (Tab. 5, Tab. 6): the backbone
alone, without the DPL branches.

Mechanism kept: backbone -> global average pooled feature -> linear layer -> one fake logit,
trained with binary cross-entropy (the ``Method`` default loss).

Default backbone: ``convnext_atto`` (params.yaml) so the grid runs on a CPU; the paper's
is ConvNeXt-T (``convnext_tiny``) at 224 px.

Deviations from the original:
- weights start from random initialisation unless the user gives a local file
  (``pretrained: path``); the paper starts from ImageNet weights;
- the head is timm's own pooling (+ its final norm for ConvNeXt) followed by one linear
  output (a single fake logit instead of a two-way softmax);
- ``backbone_kwargs`` are passed to timm (e.g. ``img_size``/``window_size`` for a 64-px Swin).
"""
from __future__ import annotations

from torch import nn

from benchmark.backbones import backbone_weights, create_backbone
from benchmark.method import Method, last_feature_map
from benchmark.registry import METHODS


@METHODS.register_module(name="baseline")
class Baseline(Method):
    paper_setting = {"backbone": "convnext_tiny"}  # the DPL paper's ConvNeXt-T, 224 px (cost table)
    paper_input_size = 224

    def __init__(self, backbone: str = "convnext_atto", pretrained: str | None = None,
                 backbone_kwargs: dict | None = None):
        super().__init__()
        self.backbone_name = backbone
        self.backbone = create_backbone(backbone, pretrained, num_classes=0, **(backbone_kwargs or {}))  # pooled (N, C)
        self.weights = backbone_weights(self.backbone)
        self.use_input_stats(self.backbone)
        self.head = nn.Linear(self.backbone.num_features, 1)

    def forward(self, batch: dict) -> dict:
        feat = self.backbone(self.normalize(batch["image"]))
        return {"logit": self.head(feat).squeeze(1), "feature": feat}

    def provenance(self) -> dict:
        return {"backbone": self.backbone_name, "weights": self.weights}

    def cam_layer(self) -> nn.Module | None:
        return last_feature_map(self.backbone)
