"""Checkpoints that load with ``weights_only=True``.

mmengine 0.10.7 stores message-hub objects and numpy arrays in its checkpoints, which torch's
safe loader refuses. ``PlainCheckpointHook`` keeps a checkpoint to tensors and plain types, and
the local-file loader scheme is replaced by one that loads with ``weights_only=True``, so resume
and the hand-over between training stages never unpickle arbitrary objects.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import CheckpointLoader

from benchmark import io
from benchmark.errors import UserError


@CheckpointLoader.register_scheme(prefixes="", force=True)
def _load_local_safely(filename, map_location):
    return torch.load(filename, map_location=map_location, weights_only=True)


def _plain(obj):
    """Only tensors, numbers, strings and containers of them (numpy → python)."""
    if isinstance(obj, np.generic):  # before float: np.float64 subclasses float
        return obj.item()
    if isinstance(obj, (torch.Tensor, str, int, float, bool, type(None))):
        return obj
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    if isinstance(obj, dict):
        return {k: v for k, v in ((k, _plain(v)) for k, v in obj.items()) if v is not _DROP}
    if isinstance(obj, (list, tuple)):
        return type(obj)(v for v in map(_plain, obj) if v is not _DROP)
    return _DROP


_DROP = object()


@HOOKS.register_module()
class PlainCheckpointHook(Hook):
    priority = "VERY_LOW"

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        hub = checkpoint.get("message_hub", {})
        checkpoint["message_hub"] = {"log_scalars": {}, "resumed_keys": _plain(hub.get("resumed_keys", {})),
                                     "runtime_info": _plain(hub.get("runtime_info", {}))}
        for key in list(checkpoint):
            checkpoint[key] = _plain(checkpoint[key])


def method_state(checkpoint: Path) -> dict:
    """The method's tensors from an mmengine epoch checkpoint (its ``method.`` keys)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return {k[len("method."):]: v for k, v in state.items() if k.startswith("method.")}


def load_trained(method, work_dir: Path):
    """Load ``model.pt`` (weights_only) into ``method`` and put it in eval mode."""
    path = Path(work_dir) / "model.pt"
    if not path.is_file():
        raise UserError(f"no trained model at {path}; run `python -m benchmark train` (or dvc repro) first")
    method.load_state_dict(io.load_tensors(path))
    return method.eval()
