"""Scoring a trained method on a test set under a protocol's conditions.

Each crop is scored under every condition (e.g. the four random-JPEG
qualities); the indicator levels are computed on the conditioned image, so the
indicator sees exactly what the detector sees. One output row per scored image
(schema in docs/CONTRACTS.md, "Scores").

How it computes (params.yaml ``evaluate``; ``compute`` records it in the scores file's
metadata for the report): on ``device``, the detector's forward under ``amp`` autocast (none |
bf16 | fp16) and optionally ``channels_last``; the indicator at full precision (its bins were
fitted so); the crops loaded by ``num_workers`` DataLoader workers (``pin_memory``,
``prefetch_factor``; each item is the same whichever worker loads it).
With a ``cache`` (``benchmark.evaluation.indicator_cache``) the indicator scores of a test set
under its conditions are computed by the first method evaluated and reused by the others.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from benchmark.data.frames import ConditionedFrames
from benchmark.engine import device as dev
from benchmark.engine.loaders import eval_loader


def compute(device, cfg: dict | None) -> dict:
    """What produced a scores file: the device and the evaluation's precision and layout."""
    cfg = cfg or {}
    return {"device": dev.describe(device), "amp": str(cfg.get("amp", "none")),
            "channels_last": bool(cfg.get("channels_last", False)), "numerics": dev.numerics()}


@torch.no_grad()
def score(method, manifest: pd.DataFrame, faces_dir, conditions, indicator, batch_size: int, seed: int,
          device="cpu", cfg: dict | None = None, cache=None) -> pd.DataFrame:
    """Score every manifest row under every condition; returns the per-image rows.
    ``cfg`` is params.yaml ``evaluate`` (amp, channels_last and the loader keys)."""
    cfg, device = cfg or {}, torch.device(device)
    amp = str(cfg.get("amp", "none"))
    dev.amp_dtype(amp, device)  # an unusable precision fails before any work
    method.to(device).eval()
    if cfg.get("channels_last"):
        dev.channels_last(method)
    needs_levels = "indicator_levels" in method.requires
    data = ConditionedFrames(manifest, faces_dir, conditions, seed)
    n_images = len(data) * conditions.n_conditions
    cached = None
    if cache is not None:
        from benchmark.evaluation import indicator_cache
        entry_key = indicator_cache.key(indicator, conditions, seed, data.rows)
        cached = cache.load(entry_key, n_images)
    parts, done = [], 0
    for batch in tqdm(eval_loader(data, max(1, batch_size // conditions.n_conditions), cfg, device),
                      desc="evaluate", unit="batch", leave=False):
        n, c = batch["image"].shape[:2]
        images = batch["image"].flatten(0, 1).to(device, non_blocking=True)  # (N*C, 3, H, W): image, then condition
        if cached is not None:
            scores = {k: v[done:done + len(images)] for k, v in cached.items()}
        else:
            scores = indicator.score(images)
        done += len(images)
        levels = indicator.levels_from_scores(scores)
        inputs = {"image": images.float() / 255}
        if cfg.get("channels_last"):
            inputs["image"] = inputs["image"].contiguous(memory_format=torch.channels_last)
        if needs_levels:
            inputs["vqi_level"], inputs["fii_level"] = (lv.to(device) for lv in levels)
        with dev.autocast(device, amp):
            logit = method(inputs)["logit"]
        prob = torch.sigmoid(logit.float()).cpu().numpy()
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
