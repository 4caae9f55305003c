"""A :class:`benchmark.method.Method` as mmengine's ``BaseModel``.

``LevelsPreprocessor`` (the model's data preprocessor) moves the batch to the model's device with
mmengine's ``cast_data`` (``non_blocking``: the loader pins its batches on CUDA), turns the uint8
crops into floats in [0, 1] (optionally channels_last) and, for methods that require
``indicator_levels``, computes the VQI/FII levels on the very image the method sees (after
augmentation), on the device, outside autocast (the levels' bins were fitted at full precision).
An item that carries several views of one image (``image`` (V, 3, H, W), e.g.
``benchmark.data.views.JPEGViews``) is flattened into the batch, view after view of each image,
its other per-item tensors repeated V times.
``MethodModel.train_step`` leaves the optimisation itself to the method (``Method.train_step``),
so a method with its own step (QAD's adversarial weight perturbation, DPL's PPO) keeps it; the
optimiser wrapper's context (autocast under ``train.amp``) covers the method's step only.
"""
from __future__ import annotations

import torch
from mmengine.model import BaseDataPreprocessor, BaseModel

IMAGE_KEYS = ("image", "image_pair")  # uint8 crops of the batch (image_pair: capability quality_pair)


class LevelsPreprocessor(BaseDataPreprocessor):
    """Batch to the device; uint8 → float in [0, 1]; adds indicator levels when the method asks."""

    def __init__(self, levels=None, channels_last: bool = False):
        super().__init__(non_blocking=True)
        self._levels = [levels]  # a list keeps a (possibly CLIP-sized) indicator out of state_dict
        self.channels_last = bool(channels_last)

    def forward(self, data: dict, training: bool = False) -> dict:
        data = flatten_views(self.cast_data(dict(data)))
        if self._levels[0] is not None:
            vqi, fii = self._levels[0](data["image"])
            data["vqi_level"], data["fii_level"] = vqi.to(self.device), fii.to(self.device)
        for key in IMAGE_KEYS:
            if key in data:
                image = data[key].float().div_(255)
                data[key] = image.contiguous(memory_format=torch.channels_last) if self.channels_last else image
        return {"batch": data}


def flatten_views(data: dict) -> dict:
    """(N, V, 3, H, W) images -> (N*V, 3, H, W); every other (N, ...) tensor repeated V times."""
    images = data["image"]
    if images.dim() != 5:
        return data
    n, v = images.shape[:2]
    out = {k: t.repeat_interleave(v, dim=0) if isinstance(t, torch.Tensor) and t.shape[:1] == (n,) else t
           for k, t in data.items()}
    out["image"] = images.flatten(0, 1)
    return out


class MethodModel(BaseModel):
    def __init__(self, method, levels=None, channels_last: bool = False):
        needs = levels if "indicator_levels" in method.requires else None
        super().__init__(data_preprocessor=LevelsPreprocessor(needs, channels_last))
        self.method = method

    def train_step(self, data: dict, optim_wrapper) -> dict:
        """mmengine's step, with the optimisation itself left to the method (``Method.train_step``)."""
        batch = self.data_preprocessor(data, True)["batch"]
        with optim_wrapper.optim_context(self):
            losses = self.method.train_step(batch, optim_wrapper)
        return {k: v.detach() for k, v in losses.items()}

    def forward(self, batch: dict, mode: str = "tensor"):
        out = self.method(batch)
        if mode == "loss":
            return self.method.loss(out, batch)
        return torch.sigmoid(out["logit"])
