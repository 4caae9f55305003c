"""Make ``import torchvision`` work next to a CPU-only torch.

On machines where the registry only offers the CUDA build of torchvision 0.28.0
(the one release that pins torch==2.13.0), its compiled ops do not load beside
the CPU torch and ``import torchvision`` fails with
``operator torchvision::nms does not exist``.  timm, open_clip and mmengine all
import torchvision, so before the first import we define that one operator's
schema with ``torch.library`` and give it a plain-PyTorch CPU implementation.

This is a no-op wherever torchvision's own ops load (any normal install): we
only act if the operator is missing.  roi_align, deform_conv and
``torchvision.io.decode_jpeg`` stay unavailable; the harness decodes with OpenCV.
"""
from __future__ import annotations

import importlib.util

import torch

_LIB = None  # keep the Library object alive for the life of the process


def _nms_cpu(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    order = scores.argsort(descending=True)
    boxes = boxes[order]
    x1, y1, x2, y2 = boxes.unbind(1)
    area = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    keep = []
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    for i in range(len(boxes)):
        if suppressed[i]:
            continue
        keep.append(i)
        w = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
        h = (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0)
        inter = w * h
        iou = inter / (area[i] + area - inter).clamp(min=1e-12)
        suppressed |= iou > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long)]


def install() -> None:
    """Define ``torchvision::nms`` if torchvision's native ops cannot provide it."""
    global _LIB
    if _LIB is not None or importlib.util.find_spec("torchvision") is None:
        return
    try:
        torch.ops.torchvision.nms  # noqa: B018 - already registered by a working build
        return
    except (AttributeError, RuntimeError):
        pass
    _LIB = torch.library.Library("torchvision", "DEF")
    _LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB.impl("nms", _nms_cpu, "CPU")
    # torchvision registers a fake kernel for the quantised variant at import
    # time, which needs its schema; it is never called on the CPU build.
    _LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
