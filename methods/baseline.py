"""Baseline: a timm backbone with a linear head (the "Baseline" row of Tab. 5 of the DPL paper).

Paper: none of its own; it is the "Baseline" setting of Zhang et al., "DPL: Cross-quality
DeepFake Detection via Dual Progressive Learning", ACCV 2024 (Tab. 5, Tab. 6): the backbone
alone, without the DPL branches.

Mechanism kept: backbone -> global average pooled feature -> linear layer -> one fake logit.

Loss (``loss``, named in every table's provenance): ``bce`` (plain binary cross-entropy, the
harness default) or ``focal`` (the binary focal loss DPL's stage I uses, ``focal_gamma``;
``methods/_losses.py``), so a comparison with DPL can hold the loss fixed and change only the
architecture. The paper does not say which loss its Tab. 5 "Baseline" row was trained with.

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
from benchmark.errors import UserError
from benchmark.method import Method, last_feature_map
from benchmark.registry import METHODS
from methods._losses import focal_bce_with_logits

LOSSES = ("bce", "focal")


@METHODS.register_module(name="baseline")
class Baseline(Method):
    paper_setting = {"backbone": "convnext_tiny"}  # the DPL paper's ConvNeXt-T, 224 px (cost table)
    paper_input_size = 224

    def __init__(self, backbone: str = "convnext_atto", pretrained: str | None = None,
                 backbone_kwargs: dict | None = None, loss: str = "bce", focal_gamma: float = 2.0):
        super().__init__()
        if loss not in LOSSES:
            raise UserError(f"methods.baseline.loss={loss!r} is unknown; choose one of: {', '.join(LOSSES)}")
        self.loss_name, self.focal_gamma = loss, float(focal_gamma)
        self.backbone_name = backbone
        self.backbone = create_backbone(backbone, pretrained, num_classes=0, **(backbone_kwargs or {}))  # pooled (N, C)
        self.weights = backbone_weights(self.backbone)
        self.use_input_stats(self.backbone)
        self.head = nn.Linear(self.backbone.num_features, 1)

    def forward(self, batch: dict) -> dict:
        feat = self.backbone(self.normalize(batch["image"]))
        return {"logit": self.head(feat).squeeze(1), "feature": feat}

    def loss(self, out: dict, batch: dict) -> dict:
        if self.loss_name == "bce":
            return super().loss(out, batch)
        focal = focal_bce_with_logits(out["logit"], batch["label"], self.focal_gamma)
        return {"loss": focal, "focal": focal}

    def provenance(self) -> dict:
        loss = "bce" if self.loss_name == "bce" else f"focal (gamma {self.focal_gamma:g})"
        return {"backbone": self.backbone_name, "weights": self.weights, "setting": f"loss {loss}"}

    def cam_layer(self) -> nn.Module | None:
        return last_feature_map(self.backbone)
