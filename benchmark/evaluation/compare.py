"""Comparisons across methods and seeds, written by the report stage next to metrics.csv.

- ``significance(scores_df, reference)``: ``results/significance.csv``, the paired DeLong test
  (``benchmark.stats``) of every method against the ``reference`` method (params
  ``metrics.reference_method``) on the same test set, condition, subset and level. Scores are
  paired by image (``video_id``, ``frame_idx``; at video level by ``video_id``, score = mean of
  the video's frames); only images both methods scored enter (``n_real``/``n_fake`` say how
  many). Where a block has several severities, a headline row (empty severity) tests the mean
  AUC over them, from the mean of the per-condition DeLong components (valid because the
  same images appear in every condition; rows whose images differ between conditions get none).
  ``diff`` and ``z`` are method minus reference. Empty when the reference method has no scores.
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
SIGNIFICANCE_COLUMNS = BLOCK + ["severity", "subset", "level", "method", "reference_method",
                                "auc_method", "auc_reference", "diff", "z", "p_value",
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


def _row(key, severity, subset, level, method, reference, comp_m, comp_r, labels) -> dict:
    test = stats.delong_paired(comp_m, comp_r)
    return {**key, "severity": severity, "subset": subset, "level": level, "method": method,
            "reference_method": reference, "auc_method": test["auc_a"],
            "auc_reference": test["auc_b"], "diff": test["diff"], "z": test["z"],
            "p_value": test["p_value"], "n_real": int((labels == 0).sum()),
            "n_fake": int((labels == 1).sum())}


def significance(scores_df: pd.DataFrame, reference: str) -> pd.DataFrame:
    rows = []
    for values, block in scores_df.groupby(BLOCK, dropna=False, sort=True):
        key = dict(zip(BLOCK, values))
        methods = set(block["method"].astype(str))
        if reference not in methods:
            continue
        for method in sorted(methods - {reference}):
            for level in LEVELS:
                rows += _compare(block, key, method, reference, level)
    out = pd.DataFrame(rows, columns=SIGNIFICANCE_COLUMNS)
    for c in ("seed", "severity", "n_real", "n_fake"):
        out[c] = pd.to_numeric(out[c]).astype("Int64")
    return out


def _compare(block, key, method, reference, level) -> list[dict]:
    rows, per_subset = [], {}
    for severity, cond in block.groupby("severity", dropna=False, sort=True):
        merged = _paired(cond[cond["method"] == reference], cond[cond["method"] == method], level)
        for subset, keep in _subsets(merged):
            part = merged[keep]
            y = part["label"].to_numpy(int)
            comp_m = stats.delong_components(y, part["score_m"])
            comp_r = stats.delong_components(y, part["score_ref"])
            rows.append(_row(key, severity, subset, level, method, reference, comp_m, comp_r, y))
            per_subset.setdefault(subset, []).append((tuple(part["sample"]), y, comp_m, comp_r))
    n_sev = block["severity"].nunique()
    for subset, conds in per_subset.items():
        if n_sev < 2 or len(conds) != n_sev or len({c[0] for c in conds}) != 1:
            continue
        comp_m = stats.mean_components([c[2] for c in conds])
        comp_r = stats.mean_components([c[3] for c in conds])
        rows.append(_row(key, math.nan, subset, level, method, reference, comp_m, comp_r, conds[0][1]))
    return rows


def seed_summary(metrics_df: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in METRIC_COLUMNS if c not in VALUES + ["seed", "auc_ci_low", "auc_ci_high",
                                                           "n_real", "n_fake"]]
    grouped = metrics_df.groupby(keys, dropna=False, sort=False)
    out = grouped[VALUES].agg(["mean", "std"])
    out.columns = [f"{v}_{stat}" for v, stat in out.columns]
    out.insert(0, "n_seeds", grouped["seed"].nunique())
    return out.reset_index()
