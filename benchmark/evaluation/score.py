"""Scoring a trained method on a test set under a protocol's conditions.

Each crop is scored under every condition (e.g. the four random-JPEG
qualities); the indicator levels are computed on the conditioned image, so the
indicator sees exactly what the detector sees. One output row per scored image
(schema in docs/CONTRACTS.md, "Scores"). With a ``cache``
(``benchmark.evaluation.indicator_cache``) the indicator scores of a test set under its
conditions are computed by the first method evaluated and reused by the others.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from benchmark.data.frames import ConditionedFrames


@torch.no_grad()
def score(method, manifest: pd.DataFrame, faces_dir, conditions, indicator, batch_size: int, seed: int,
          cache=None) -> pd.DataFrame:
    """Score every manifest row under every condition; returns the per-image rows."""
    method.eval()
    needs_levels = "indicator_levels" in method.requires
    data = ConditionedFrames(manifest, faces_dir, conditions, seed)
    n_images = len(data) * conditions.n_conditions
    if cache is not None:
        from benchmark.evaluation import indicator_cache
        entry_key = indicator_cache.key(indicator, conditions, seed, data.rows)
        cached = cache.load(entry_key, n_images)
    parts, done = [], 0
    for batch in tqdm(DataLoader(data, batch_size=max(1, batch_size // conditions.n_conditions)),
                      desc="evaluate", unit="batch", leave=False):
        n, c = batch["image"].shape[:2]
        images = batch["image"].flatten(0, 1)  # (N*C, 3, H, W), row-major: image, then condition
        if cache is not None and cached is not None:
            scores = {k: v[done:done + len(images)] for k, v in cached.items()}
        else:
            scores = indicator.score(images)
        done += len(images)
        levels = indicator.levels_from_scores(scores)
        inputs = {"image": images.float() / 255}
        if needs_levels:
            inputs["vqi_level"], inputs["fii_level"] = levels
        prob = torch.sigmoid(method(inputs)["logit"]).numpy()
        parts.append(pd.DataFrame({
            "row": batch["index"].repeat_interleave(c).numpy(),
            "severity": np.tile(np.asarray(conditions.severities), n),
            "jpeg_quality": batch["param"].flatten().numpy(),
            "score": prob,
            "vqi": scores["vqi"], "fii": scores["fii"],
            "vqi_level": levels[0].numpy(), "fii_level": levels[1].numpy(),
        }))
    out = pd.concat(parts, ignore_index=True)
    if cache is not None:
        if cached is None:
            cache.save(entry_key, out)
            cache.misses += n_images
        else:
            cache.hits += n_images
    meta = manifest.reset_index(drop=True)[["quality", "video_id", "frame_idx", "label", "manipulation"]]
    out = meta.iloc[out.pop("row").to_numpy()].reset_index(drop=True).join(out)
    out["perturbation"] = conditions.name
    return out
