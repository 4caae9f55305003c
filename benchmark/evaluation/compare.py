"""Comparisons across methods and seeds, written by the report stage next to metrics.csv.

- ``significance(scores_df, reference, n_boot, seed)``: ``results/significance.csv``, a paired
  test of every method against the ``reference`` method (params ``metrics.reference_method``) on
  the same test set, condition, subset and level, with ``diff`` = method minus reference. A
  video's frames are not independent, so frame-level AUCs are NOT tested by DeLong over frames
  (whose p-values that makes too small): ``test`` says which test a row used --
  ``bootstrap_videos`` at frame level: the paired bootstrap of the AUC difference resampling
  videos, stratified by label, the same resamples for both methods (``n_boot`` replicates seeded
  by ``seed``: params ``metrics.bootstrap`` / ``metrics.seed``, as the CIs), ``stats.bootstrap_test``;
  ``delong_videos`` at video level: DeLong on the video scores (mean of a video's frames), which
  are independent samples. Images are paired by ``video_id``/``frame_idx`` (videos by
  ``video_id``); only images both methods scored enter (``n_real``/``n_fake`` count them). Where a
  block has several severities, a headline row (empty severity) tests the mean AUC over them:
  the mean of the per-condition replicate differences (same video resamples) or of the
  per-condition DeLong components (valid because the same images appear in every condition;
  rows whose images differ between conditions get none). A comparison with a non-finite score
  gets no p-value.
  ``p_holm``: Holm's correction over the comparisons of one table, the family ``FAMILY``
  (protocol, seed, train set, perturbation, condition or headline, level: every method, test
  set and subset of it). Empty when the reference method has no scores.
- ``seed_summary(metrics_df)``: ``results/metrics_seeds.csv``, mean and sample standard
  deviation (ddof 1; empty for a single seed) of auc/ap/eer/acc over seeds, per metrics row
  without its seed, with ``n_seeds``.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from benchmark.evaluation import stats
from benchmark.evaluation.metrics import LEVELS, METRIC_COLUMNS, VALUES, _video_level, subset_rank

BLOCK = ["protocol", "seed", "train_set", "test_set", "quality", "perturbation"]
FAMILY = ["protocol", "seed", "train_set", "perturbation", "severity", "level"]
TESTS = {"frame": "bootstrap_videos", "video": "delong_videos"}
SIGNIFICANCE_COLUMNS = BLOCK + ["severity", "subset", "level", "method", "reference_method",
                                "auc_method", "auc_reference", "diff", "z", "p_value", "p_holm", "test",
                                "n_real", "n_fake"]


def _samples(df: pd.DataFrame, level: str) -> pd.DataFrame:
    if level == "frame":
        out = df[["video_id", "frame_idx", "label", "manipulation", "score"]]
        return out.assign(sample=out["video_id"].astype(str) + "#" + out["frame_idx"].astype(str))
    out = _video_level(df).reset_index()
    return out.assign(sample=out["video_id"].astype(str))


def _paired(ref: pd.DataFrame, other: pd.DataFrame, level: str) -> pd.DataFrame:
    a, b = _samples(ref, level), _samples(other, level)[["sample", "score"]]
    return a.merge(b, on="sample", suffixes=("_ref", "_m")).sort_values("sample", kind="mergesort")


def _subsets(merged: pd.DataFrame):
    reals = merged["label"].to_numpy(int) == 0
    man = merged["manipulation"].astype(str).to_numpy()
    for subset in sorted(set(man[~reals]), key=subset_rank) + ["all"]:
        yield subset, reals | (man == subset) if subset != "all" else np.ones(len(merged), bool)


class _Comparison:
    """One condition and subset of a method against the reference: the AUCs and what the test needs."""

    def __init__(self, part: pd.DataFrame, level: str, n_boot: int, seed: int):
        self.samples, self.y = tuple(part["sample"]), part["label"].to_numpy(int)
        sm, sr = part["score_m"].to_numpy(float), part["score_ref"].to_numpy(float)
        finite = bool(np.isfinite(sm).all() and np.isfinite(sr).all())
        self.comp_m = stats.delong_components(self.y, sm if finite else np.zeros_like(sm))
        self.comp_r = stats.delong_components(self.y, sr if finite else np.zeros_like(sr))
        self.reps = None
        if level == "frame" and n_boot > 0 and finite and np.unique(self.y).size == 2:
            videos, g = np.unique(part["video_id"].astype(str).to_numpy(), return_inverse=True)
            vlab = np.zeros(videos.size, int)
            vlab[g] = self.y
            counts = stats.video_resamples(vlab, n_boot, seed)
            self.reps = stats.clustered_auc(self.y, sm, g, counts) - stats.clustered_auc(self.y, sr, g, counts)
        self.finite, self.level = finite, level


def _row(key, severity, subset, level, method, reference, parts: list[_Comparison]) -> dict:
    """The test of the mean AUC over ``parts`` (one part: that condition)."""
    comp_m = stats.mean_components([p.comp_m for p in parts])
    comp_r = stats.mean_components([p.comp_r for p in parts])
    auc_m, auc_r = comp_m[0], comp_r[0]
    if not all(p.finite for p in parts):
        test = {"z": math.nan, "p_value": math.nan}
        auc_m = auc_r = math.nan
    elif level == "frame":
        reps = [p.reps for p in parts]
        test = stats.bootstrap_test(auc_m - auc_r, np.mean(reps, axis=0) if all(r is not None for r in reps) else [])
    else:
        test = stats.delong_paired(comp_m, comp_r)
    y = parts[0].y
    return {**key, "severity": severity, "subset": subset, "level": level, "method": method,
            "reference_method": reference, "auc_method": auc_m, "auc_reference": auc_r, "diff": auc_m - auc_r,
            "z": test["z"], "p_value": test["p_value"], "test": TESTS[level],
            "n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum())}


def significance(scores_df: pd.DataFrame, reference: str, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    rows = []
    for values, block in scores_df.groupby(BLOCK, dropna=False, sort=True):
        key = dict(zip(BLOCK, values))
        methods = set(block["method"].astype(str))
        if reference not in methods:
            continue
        for method in sorted(methods - {reference}):
            for level in LEVELS:
                rows += _compare(block, key, method, reference, level, int(n_boot), int(seed))
    out = pd.DataFrame(rows, columns=SIGNIFICANCE_COLUMNS)
    for c in ("seed", "severity", "n_real", "n_fake"):
        out[c] = pd.to_numeric(out[c]).astype("Int64")
    out["p_holm"] = np.nan
    for _, idx in out.groupby(FAMILY, dropna=False, sort=False).groups.items():
        out.loc[idx, "p_holm"] = stats.holm(out.loc[idx, "p_value"].to_numpy(float))
    return out


def _compare(block, key, method, reference, level, n_boot, seed) -> list[dict]:
    rows, per_subset = [], {}
    for severity, cond in block.groupby("severity", dropna=False, sort=True):
        merged = _paired(cond[cond["method"] == reference], cond[cond["method"] == method], level)
        for subset, keep in _subsets(merged):
            part = _Comparison(merged[keep], level, n_boot, seed)
            rows.append(_row(key, severity, subset, level, method, reference, [part]))
            per_subset.setdefault(subset, []).append(part)
    n_sev = block["severity"].nunique()
    for subset, parts in per_subset.items():
        if n_sev < 2 or len(parts) != n_sev or len({p.samples for p in parts}) != 1:
            continue
        rows.append(_row(key, math.nan, subset, level, method, reference, parts))
    return rows


def seed_summary(metrics_df: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in METRIC_COLUMNS if c not in VALUES + ["seed", "auc_ci_low", "auc_ci_high",
                                                           "n_real", "n_fake"]]
    grouped = metrics_df.groupby(keys, dropna=False, sort=False)
    out = grouped[VALUES].agg(["mean", "std"])
    out.columns = [f"{v}_{stat}" for v, stat in out.columns]
    out.insert(0, "n_seeds", grouped["seed"].nunique())
    return out.reset_index()
