"""A timm backbone cut into its feature stages, so a method can act between stages.

Two-stream methods (F3Net's MixBlock, SRM's attention modules) and attention inserted inside a
network (SIA) need the feature map after stage i before stage i+1 runs. ``Staged`` takes a
timm model whose ``forward_features`` runs its top-level children in order (ResNet,
EfficientNet, Xception, ConvNeXt: checked in tests/test_staged.py) and splits them at the
model's own ``feature_info`` points:

- a feature module that is a top-level child (``layer2``) or an item of a top-level Sequential
  (``blocks.4``) ends a stage right after it;
- one nested deeper (Xception's ``block2.rep.0``, the ReLU at the start of block2) ends the
  stage right before its top-level child (same tensor, before that ReLU).

Children after the last feature point (pooling, classifier, EfficientNet's conv_head) are
dropped: a method pools the last stage itself. ``channels[i]`` is stage i's output width,
``reductions[i]`` its stride. ``pretrained_cfg`` is the timm model's, so
``Method.use_input_stats(staged)`` normalises with the backbone's own mean/std.
"""
from __future__ import annotations

import torch
from torch import nn

from benchmark.errors import UserError
from benchmark.backbones import backbone_weights, create_backbone


class Staged(nn.Module):
    def __init__(self, name: str, in_chans: int = 3, pretrained: str | None = None):
        super().__init__()
        model = create_backbone(name, pretrained, num_classes=0)
        self.weights = backbone_weights(model)
        self.pretrained_cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
        if in_chans != 3:
            _adapt_first_conv(model, in_chans)
        infos = getattr(model, "feature_info", None)
        if not infos:
            raise UserError(f"backbone {name!r} declares no feature_info stages; choose a CNN such as resnet10t")
        points = [f["module"] for f in infos]
        parts = _parts(model, points)
        names = [n for n, _ in parts]
        ends = []
        for p in points:
            if p in names:
                ends.append(names.index(p) + 1)
            else:  # nested deeper: the stage ends before its top-level child
                ends.append(names.index(p.split(".")[0]))
        if ends != sorted(ends) or len(set(ends)) != len(ends) or ends[0] < 1:
            raise UserError(f"backbone {name!r}: cannot split at its feature points {points}")
        starts = [0, *ends[:-1]]
        self.stages = nn.ModuleList(nn.Sequential(*(m for _, m in parts[a:b])) for a, b in zip(starts, ends))
        self.channels = [f["num_chs"] for f in infos]
        self.reductions = [f["reduction"] for f in infos]

    def __len__(self) -> int:
        return len(self.stages)

    def index(self, reduction: int) -> int:
        """The stage whose output has stride ``reduction`` (a one-line error when none has)."""
        if int(reduction) not in self.reductions:
            raise UserError(f"no feature stage of stride {reduction}; this backbone's strides are {self.reductions}")
        return self.reductions.index(int(reduction))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def _parts(model: nn.Module, points: list[str]) -> list[tuple[str, nn.Module]]:
    """Top-level children in order, with a Sequential expanded where a point names its item."""
    expand = {p.split(".")[0] for p in points if p.count(".") == 1 and p.split(".")[1].isdigit()}
    parts = []
    for name, child in model.named_children():
        if name in expand:
            parts.extend((f"{name}.{i}", m) for i, m in enumerate(child))
        else:
            parts.append((name, child))
    return parts


def _adapt_first_conv(model: nn.Module, in_chans: int) -> None:
    """Replace the first 3-channel conv by an ``in_chans`` one (timm's weight adaptation)."""
    from timm.models import adapt_input_conv
    for parent in model.modules():
        for attr, conv in parent.named_children():
            if isinstance(conv, nn.Conv2d) and conv.in_channels == 3:
                new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                                conv.dilation, conv.groups, conv.bias is not None)
                with torch.no_grad():
                    new.weight.copy_(adapt_input_conv(in_chans, conv.weight))
                    if conv.bias is not None:
                        new.bias.copy_(conv.bias)
                setattr(parent, attr, new)
                return
    raise UserError(f"{type(model).__name__} has no 3-channel input conv to adapt to {in_chans} channels")
