"""timm backbones as the methods build them, their weights, and the input statistics each expects.

``create_backbone(name, pretrained=None, **kwargs)`` is ``timm.create_model`` the way timm's own
users load weights (a method's ``pretrained:`` option):

* ``None``/``false``: random initialisation (``pretrained=False``);
* a file path: ``pretrained=True, pretrained_cfg_overlay=dict(file=path)``; timm reads it
  (``.safetensors``, or ``torch.load(weights_only=True)``, so a pickle of objects is refused),
  applies the model's own checkpoint filter, drops a classifier the model does not have and
  adapts the first convolution to ``in_chans``;
* ``true``: timm's default weights of ``name`` (``name`` may carry a tag, e.g.
  ``convnext_tiny.fb_in1k``), from the Hugging Face cache when they are there, else downloaded by
  timm into it. Offline with nothing cached, one line says which file of which hub repository to
  put there (or to pass as a path).

A file that is not a state dict, or whose tensors are not the model's, is a one-line
``UserError`` naming the file and what was expected -- also where timm itself would load it
non-strictly (it does whenever the model has no classifier, as every method's backbone here):
after loading, at least half of the model's parameters (by count) must equal tensors of the file.
``backbone_weights(model)`` says what the model was initialised from, for the report.

``input_stats(model)`` is the mean and standard deviation of the model's own data config
(``timm.data.resolve_model_data_config``): ImageNet's for ResNet/ConvNeXt/EfficientNet, 0.5/0.5
for the Xception family and the ViTs. A method normalises its input with the statistics of its
backbone (``benchmark.method.Method.use_input_stats``), never with hard-coded ImageNet values.

timm is imported where a model is made, not with this module: the registries import every method
(``benchmark.registry.load_all``), and the verbs that build no model (metrics, report, extract, ...) then
start without it (``benchmarks/stage_start.py`` measures what it costs).
"""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import torch
from torch import nn

from benchmark.errors import UserError

RANDOM_INIT = "random init"
MIN_MATCHED = 0.5  # share of the model's parameters (by count) a weights file must provide


def create_backbone(name: str, pretrained=None, **kwargs) -> nn.Module:
    """``timm.create_model(name, ...)`` with ``pretrained`` as in the module docstring."""
    if pretrained is None or pretrained is False or str(pretrained).lower() in ("", "none", "null", "false"):
        return _create(name, False, RANDOM_INIT, **kwargs)
    if pretrained is True or str(pretrained).lower() == "true":
        return _from_hub(name, **kwargs)
    path = Path(str(pretrained))
    if not path.is_file():
        raise UserError(f"pretrained weights {str(pretrained)!r} not found; give a local .safetensors/.pth "
                        f"state dict of timm {name}, true (timm's default weights), or null")
    try:  # read here first with weights_only=True, whatever the installed timm's own default
        tensors = _tensors(path)
        model = _create(name, True, path.name, pretrained_cfg_overlay={"file": str(path)}, **kwargs)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - unreadable, truncated, shapes that do not fit
        raise UserError(f"pretrained weights {path} are not a state dict of timm {name} "
                        f"({type(e).__name__}: {_first_line(e)}); give a file saved from that model's state_dict") from None
    _check_matched(model, tensors, path, name)
    return model


def backbone_weights(model: nn.Module) -> str:
    """What ``create_backbone`` initialised ``model`` from: ``random init``, a file name or a timm tag."""
    return getattr(model, "_weights_source", RANDOM_INIT)


def _create(name: str, pretrained: bool, source: str, **kwargs) -> nn.Module:
    import timm
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except RuntimeError as e:  # timm: "Unknown model (...)"
        if "Unknown model" not in str(e):
            raise
        raise UserError(f"backbone {name!r} is not a timm model ({e}); see timm.list_models()") from e
    model._weights_source = source
    return model


def _from_hub(name: str, **kwargs) -> nn.Module:
    """timm's default weights of ``name`` through its own hub logic and cache."""
    import timm
    found = timm.models.get_pretrained_cfg(name)
    cfg = found.to_dict() if found is not None else {}
    tag = f"timm {cfg.get('hf_hub_id') or name}"
    try:
        return _create(name, True, tag, **kwargs)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - offline (hub or URL unreachable), nothing cached
        hub = cfg.get("hf_hub_id")
        fname = cfg.get("hf_hub_filename") or "model.safetensors"
        where = (f"put `{fname}` of the Hugging Face repo {hub} into the hub cache (HF_HOME; "
                 f"`huggingface-cli download {hub} {fname}`)" if hub else
                 f"put {cfg.get('url', '?')} into torch's hub cache ($TORCH_HOME/hub/checkpoints)")
        raise UserError(f"timm weights of {name} are not cached and could not be fetched ({type(e).__name__}: "
                        f"{_first_line(e)}); {where}, or set the method's pretrained: to that file's path") from None


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [""])[0][:160]


def _digest(t: torch.Tensor) -> tuple:
    return tuple(t.shape), hashlib.sha1(t.detach().double().cpu().contiguous().numpy().tobytes()).hexdigest()


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a weights file by its (dotted) key: safetensors, or ``torch.load`` with
    ``weights_only=True`` (nested dicts such as ``{"state_dict": ...}`` are walked)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(f"pretrained weights {path}: torch.load with weights_only=True refuses it: it holds Python "
                        f"objects, not only tensors ({_first_line(e)[:160]}); save model.state_dict() instead") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise UserError(f"pretrained weights {path} cannot be read by torch.load ({type(e).__name__}: "
                        f"{_first_line(e)[:160]}); the file is truncated or not a torch checkpoint") from None
    if not isinstance(loaded, dict):
        raise UserError(f"pretrained weights {path} hold a {type(loaded).__name__}, not a state dict; "
                        f"save model.state_dict() of the backbone")
    out, todo = {}, [("", loaded)]
    while todo:
        prefix, obj = todo.pop()
        if isinstance(obj, torch.Tensor):
            out[prefix] = obj
        elif isinstance(obj, dict):
            todo += [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in obj.items()]
    return out


def _check_matched(model: nn.Module, tensors: dict, path: Path, name: str) -> None:
    """Refuse a file whose tensors supplied less than ``MIN_MATCHED`` of the model's parameters."""
    have = {_digest(t) for t in tensors.values() if t.is_floating_point()}
    params = list(model.parameters())
    matched = sum(p.numel() for p in params if _digest(p) in have)
    total = sum(p.numel() for p in params)
    if total and matched < MIN_MATCHED * total:
        example = next(iter(model.state_dict().items()))
        which = "match no parameter" if not matched else f"supply only {matched / total:.1%} of the parameters"
        raise UserError(f"pretrained weights {path} do not fit timm {name}: its tensors {which} "
                        f"(expected its state dict, e.g. {example[0]!r} {tuple(example[1].shape)}; the file "
                        f"holds {next(iter(sorted(tensors)), 'no tensors')!r}, ...)")


def input_stats(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of ``model``'s timm data config."""
    import timm
    cfg = timm.data.resolve_model_data_config(model)
    return tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])
