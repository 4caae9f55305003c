"""VQI and FII, the two indicators that set DPL's step counts (paper §3.1-3.2, DESIGN §7).

A backend (registered in ``benchmark.registry.INDICATORS``) has
``score(images: uint8 Tensor (N, 3, H, W) RGB) -> {"vqi": ndarray (N,), "fii": ndarray (N,)}``
with scores in [0, 1] -- vqi = P("Good photo."), higher = better quality; fii =
P("manipulated face."), higher = more identifiable -- and ``describe() -> dict`` (backend,
model, weights, logit_scale) for provenance.

* ``open_clip`` (clip.py): Eq. (1) on an open_clip model with local weights only.
* ``fallback`` (fallback.py): offline image statistics with the same meaning; NOT CLIP.
* ``build_indicator(cfg)`` (build.py): ``backend: auto`` = open_clip if its weights load
  locally, else fallback.
* Binning to levels 1..K (binning.py): ``quantile`` (paper) or ``fixed`` (authors' release);
  ``IndicatorLevels.levels(images)`` gives the per-image (vqi_level, fii_level) LongTensors.
* ``compute_indicators`` (compute.py): scores a face manifest, fits the edges on the training
  rows and writes ``data/indicators/<D>.parquet`` and ``.json``; ``load_indicator(json, cfg)``
  reads the edges back with the backend they were fitted with (``.levels(images)``).
"""
from benchmark.indicators.binning import (FIXED_EDGES, IndicatorLevels, fit_quantile_edges,
                                          to_levels)
from benchmark.indicators.build import (backend_from_description, build_indicator, load_indicator,
                                        load_levels)
from benchmark.indicators.clip import PROMPTS, OpenCLIPIndicator, resolve_weights, two_prompt_softmax
from benchmark.indicators.compute import (DEFAULT_FIT_QUERY, compute_indicators, load_crops,
                                          score_manifest, truth_correlations)
from benchmark.indicators.fallback import FallbackIndicator, fallback_scores

__all__ = ["FIXED_EDGES", "IndicatorLevels", "fit_quantile_edges", "to_levels",
           "backend_from_description", "build_indicator", "load_indicator", "load_levels", "PROMPTS",
           "OpenCLIPIndicator", "resolve_weights", "two_prompt_softmax", "DEFAULT_FIT_QUERY",
           "compute_indicators", "load_crops", "score_manifest", "truth_correlations",
           "FallbackIndicator", "fallback_scores"]
