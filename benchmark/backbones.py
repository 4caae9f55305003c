"""timm backbones as the methods build them, and the input statistics each one expects.

``create_backbone(name, **kwargs)`` is ``timm.create_model(name, pretrained=False, **kwargs)``
with a one-line error for a name timm does not know. ``input_stats(model)`` is the mean and
standard deviation of the model's own data config (``timm.data.resolve_model_data_config``):
ImageNet's for ResNet/ConvNeXt/EfficientNet, 0.5/0.5 for the Xception family and the ViTs.
A method normalises its input with the statistics of its backbone
(``benchmark.method.Method.use_input_stats``), never with hard-coded ImageNet values.
"""
from __future__ import annotations

import timm
from torch import nn

from benchmark.errors import UserError


def create_backbone(name: str, **kwargs) -> nn.Module:
    """``timm.create_model(name, pretrained=False, **kwargs)`` with a one-line error for bad names."""
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except RuntimeError as e:  # timm: "Unknown model (...)"
        raise UserError(f"backbone {name!r} is not a timm model ({e}); see timm.list_models()") from e


def input_stats(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of ``model``'s timm data config."""
    cfg = timm.data.resolve_model_data_config(model)
    return tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])
