"""Checkpoints that load with ``weights_only=True``, written atomically, checked when read.

mmengine 0.10.7 stores message-hub objects and numpy arrays in its checkpoints, which torch's
safe loader refuses. ``PlainCheckpointHook`` keeps a checkpoint to tensors and plain types, and
the local-file loader scheme is replaced by one that loads with ``weights_only=True``, so resume
and the hand-over between training stages never unpickle arbitrary objects. mmengine's local
file backend is replaced by one whose writes are atomic (``benchmark.io``), so a kill or a full
disk during a checkpoint write leaves the previous checkpoints intact.

``latest_checkpoint(dir, method)``: the newest ``epoch_<N>.pth`` to resume from (None when there
is none), refused with one line when it cannot be loaded or holds another model's tensors;
``load_state(method, state, path, rerun)``: a state dict into a method, one line when it does
not fit; ``load_trained(method, work_dir, rerun)``: ``model.pt`` (weights_only) into a method.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from mmengine.fileio.backends import LocalBackend, register_backend
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import CheckpointLoader

from benchmark import io
from benchmark.errors import UserError


@CheckpointLoader.register_scheme(prefixes="", force=True)
def _load_local_safely(filename, map_location):
    return torch.load(filename, map_location=map_location, weights_only=True)


class AtomicLocalBackend(LocalBackend):
    """mmengine's local files, written through a temporary sibling and a rename."""

    def put(self, obj: bytes, filepath) -> None:
        io.write_bytes(filepath, obj)

    def put_text(self, obj: str, filepath, encoding: str = "utf-8") -> None:
        io.write_bytes(filepath, obj.encode(encoding))


register_backend("local", AtomicLocalBackend, force=True, prefixes="")


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


RETRAIN = "the `train` stage for it (python -m benchmark train …, or dvc repro)"


def method_state(checkpoint: Path, rerun: str = RETRAIN) -> dict:
    """The method's tensors from an mmengine epoch checkpoint (its ``method.`` keys)."""
    ckpt = io.load_tensors(checkpoint, stage=rerun)
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"{checkpoint} is not an epoch checkpoint of this harness (no state_dict); rerun {rerun}")
    return {k[len("method."):]: v for k, v in state.items() if k.startswith("method.")}


def epoch_checkpoints(stage_dir: Path) -> list[Path]:
    """``epoch_<N>.pth`` files in ``stage_dir``, oldest first."""
    found = [(int(p.stem[6:]), p) for p in Path(stage_dir).glob("epoch_*.pth") if p.stem[6:].isdigit()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(stage_dir: Path, method=None) -> Path | None:
    """The newest epoch checkpoint, checked to load (and, given ``method``, to fit it)."""
    found = epoch_checkpoints(stage_dir)
    if not found:
        return None
    rerun = (f"training after deleting it (resumes from the epoch before), or delete {Path(stage_dir).parent} "
             f"to train from scratch")
    state = method_state(found[-1], rerun)
    if method is not None:
        want = {k: tuple(v.shape) for k, v in method.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in state.items()}
        if want != got:
            raise UserError(f"{found[-1]} holds another model's tensors ({_mismatch(want, got)}); rerun {rerun}")
    return found[-1]


def prune_checkpoints(stage_dir: Path, keep_all: bool = False) -> None:
    """All but the newest epoch checkpoint removed (none when ``keep_all``)."""
    for p in [] if keep_all else epoch_checkpoints(stage_dir)[:-1]:
        p.unlink()


def _mismatch(want: dict, got: dict) -> str:
    missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing:
        return f"{len(missing)} tensors missing, e.g. {missing[0]}"
    if unexpected:
        return f"{len(unexpected)} unexpected tensors, e.g. {unexpected[0]}"
    k = next(k for k in want if want[k] != got[k])
    return f"{k} has shape {list(got[k])}, the configured model {list(want[k])}"


def load_state(method, state, path, rerun: str = RETRAIN, own=()):
    """``method.load_state_dict(state)`` (strict); a state that does not fit is one UserError.

    ``own``: keys of modules the method is about to train itself (``engine.adopt``): taken from
    ``state`` where it has them in the same shape, else kept as initialised; every other key
    must fit, and keys of ``state`` that the method does not have are then ignored."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} does not hold a state dict of tensors (it holds a {type(state).__name__}); "
                        f"rerun {rerun}")
    mine, own = method.state_dict(), set(own)
    if own:
        fits = {k: v for k, v in state.items() if k in mine and (k not in own or v.shape == mine[k].shape)}
        state = {**{k: mine[k] for k in own}, **fits}
    want = {k: tuple(v.shape) for k, v in mine.items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if want != got:
        raise UserError(f"{path} was made with another configuration of {type(method).__name__} "
                        f"({_mismatch(want, got)}); rerun {rerun}")
    method.load_state_dict(state)
    return method


def load_trained(method, work_dir: Path, rerun: str = RETRAIN):
    """Load ``model.pt`` (weights_only) into ``method`` and put it in eval mode."""
    path = Path(work_dir) / "model.pt"
    if not path.is_file():
        raise UserError(f"no trained model at {path}; run {rerun} first")
    return load_state(method, io.load_tensors(path, stage=rerun), path, rerun).eval()
