"""Choosing the indicator backend from params.yaml, and reloading fitted levels."""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

from benchmark import io
from benchmark.errors import UserError
from benchmark.indicators.binning import IndicatorLevels
from benchmark.indicators.clip import OpenCLIPIndicator
from benchmark.indicators.fallback import FallbackIndicator
from benchmark.registry import INDICATORS, get

BACKEND_KEYS = ("model", "weights", "logit_scale", "prompt_period", "device", "batch_size", "cache_dir")
DESCRIBED = ("backend", "model", "weights", "logit_scale", "prompt_period")  # what a fitted file records


def build_indicator(cfg: Mapping | None = None, **overrides):
    """The backend for ``cfg`` (params.yaml ``indicators``; binning/k are ignored here).

    ``backend: auto`` gives ``open_clip`` when its weights load from local files, else
    ``fallback`` (with a warning; ``describe()['fallback_reason']`` says why) -- unless
    ``weights`` names something, in which case failing to load it is an error.  An explicit
    ``open_clip`` whose weights cannot be loaded raises a one-line UserError.  Any other
    name is looked up in ``benchmark.registry.INDICATORS``.
    """
    cfg = {**dict(cfg or {}), **overrides}
    name = cfg.get("backend", "auto") or "auto"
    kwargs = {k: cfg[k] for k in BACKEND_KEYS if k in cfg}
    if name == "auto" and cfg.get("weights"):
        return OpenCLIPIndicator(**kwargs)  # weights named explicitly: a bad path is an error, not a fallback
    if name == "auto":
        try:
            return OpenCLIPIndicator(**kwargs)
        except UserError as e:
            warnings.warn(f"indicators: using the fallback backend (not CLIP): {e}", stacklevel=2)
            return FallbackIndicator(reason=str(e), device=kwargs.get("device", "cpu"))
    return get(INDICATORS, name)(**kwargs)


def backend_from_description(d: Mapping, device=None):
    """Rebuild exactly the backend a ``data/indicators/<D>.json`` was computed with, on ``device``
    (a torch device or name; None = the CPU)."""
    device = "cpu" if device is None else device
    if d.get("backend") == "fallback":
        return FallbackIndicator(reason=d.get("fallback_reason"), device=device)
    return build_indicator({k: d[k] for k in DESCRIBED if k in d}, device=device)


def load_indicator(path, cfg: Mapping | None = None, backend=None, device=None) -> IndicatorLevels:
    """IndicatorLevels from ``data/indicators/<D>.json``, with the backend it was fitted with.

    The result has ``score(images)``, ``levels(images)`` and ``levels_from_scores(scores)``.
    ``cfg`` (params.yaml ``indicators``), when given, must still agree with the file on
    binning and k, and on the backend unless it says ``auto`` (else UserError: re-run the
    stage).  A ``backend`` passed in must match the recorded one (the edges fit its scores);
    otherwise it is rebuilt on ``device`` (params.yaml ``device``, resolved; None = the CPU).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"indicator file {path} not found; run the `indicators` stage first")
    d = io.read_json(path, f"`python -m benchmark indicators dataset={path.stem}`")
    if cfg:
        want = {"binning": cfg.get("binning", "quantile"), "k": int(cfg.get("k", 5)),
                "round_percent": bool(cfg.get("round_percent", False))}
        if cfg.get("backend", "auto") not in ("auto", None):
            want["backend"] = cfg["backend"]
        stale = {k: (d.get(k), v) for k, v in want.items() if d.get(k) != v}
        if stale:
            raise UserError(f"{path} is stale ({', '.join(f'{k}: {a} in file, {b} in params' for k, (a, b) in stale.items())}); "
                            f"re-run the `indicators` stage")
    if backend is None:
        backend = backend_from_description(d, device)
    else:
        got = backend.describe()
        if any(got.get(k) != d.get(k) for k in DESCRIBED):
            raise UserError(f"{path} was fitted with backend {d.get('backend')} {d.get('model')} "
                            f"{d.get('weights')}, not {got.get('backend')} {got.get('model')} "
                            f"{got.get('weights')}; re-run the `indicators` stage")
    return IndicatorLevels.from_dict(d, backend=backend)


load_levels = load_indicator  # alias
