"""Scores -> metrics: binary metrics per condition, subset and level (docs/CONTRACTS.md "Metrics").

- ``binary_metrics(labels, scores)``: AUC, AP, EER, accuracy at 0.5 (scikit-learn). With only
  one class AUC/AP/EER are undefined and come back NaN; accuracy is still defined and kept.
  An empty input, or one with a NaN or infinite score (a model that diverged), gives NaN
  everywhere (the report says which rows).
- ``compute_metrics(scores_df)``: the tidy ``results/metrics.csv`` frame (``METRIC_COLUMNS``).
  Per condition (protocol, method, seed, train_set, test_set, quality, perturbation, severity)
  and level (``frame``: one sample per row; ``video``: mean frame score per ``video_id``), one
  row per subset: each manipulation present among the fakes (all reals + its fakes) and ``all``.
  Where a (…, test_set, quality, perturbation, subset, level) block has more than one severity,
  a headline row follows with empty severity and the mean over severities of auc/ap/eer/acc
  (NaN if any condition is NaN); its n_real/n_fake are the per-condition counts (empty when the
  conditions disagree).
- ``compute_metrics(scores_df, n_boot=B, boot_seed=S)`` also fills auc_ci_low/auc_ci_high with
  the 95 % bootstrap CI of the AUC, resampling VIDEOS (stratified by label, all frames of a
  drawn video kept together), on the logit scale (``benchmark.evaluation.stats.logit_ci``: AUC
  ± 1.96 sd of the replicates' logits; the percentile interval undercovered on simulated
  clustered scores, ``benchmarks/ci_coverage.py``). The replicates depend only on the seed and
  the block's videos, so every severity of a block uses the same resamples and a headline
  row's CI comes from the per-replicate mean over its conditions.
  ``n_boot=0`` (the default) leaves the CI columns empty.
- ``headline_rows(metrics_df)``: the row that stands for each block (the headline row, or the
  single condition when there is only one).
- ``metrics_json(metrics_df)``: {protocol: {method: {test_set: {level: {subset: auc}}}}} of the
  headline rows, mean over seeds, for DVC. When one block has several perturbations the subset
  key becomes ``"<perturbation>:<subset>"`` so no value is averaged across perturbations.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from benchmark.evaluation import stats

METRIC_COLUMNS = [
    "protocol", "method", "seed", "train_set", "test_set", "subset", "quality", "perturbation",
    "severity", "level", "auc", "ap", "eer", "acc", "auc_ci_low", "auc_ci_high", "n_real", "n_fake",
]
CONDITION_KEYS = ["protocol", "method", "seed", "train_set", "test_set", "quality",
                  "perturbation", "severity"]
BLOCK_KEYS = ["protocol", "method", "seed", "train_set", "test_set", "quality", "perturbation",
              "subset", "level"]
VALUES = ["auc", "ap", "eer", "acc"]
SUBSET_ORDER = ["DF", "F2F", "FS", "NT"]  # then any other manipulation by name, then "all"
LEVELS = ["frame", "video"]
_NAN = float("nan")


def binary_metrics(labels, scores) -> dict:
    """AUC, AP, EER (FPR = FNR, linearly interpolated on the ROC) and accuracy at 0.5."""
    y = np.asarray(labels, dtype=int).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    if y.size != s.size:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    if y.size == 0 or not np.isfinite(s).all():
        return dict(auc=_NAN, ap=_NAN, eer=_NAN, acc=_NAN)
    acc = float(np.mean((s >= 0.5).astype(int) == y))
    if np.unique(y).size < 2:
        return dict(auc=_NAN, ap=_NAN, eer=_NAN, acc=acc)
    return dict(auc=float(roc_auc_score(y, s)), ap=float(average_precision_score(y, s)),
                eer=equal_error_rate(y, s), acc=acc)


def equal_error_rate(labels, scores) -> float:
    """The rate where FPR = FNR, on the straight ROC segment where FNR - FPR changes sign."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    diff = (1.0 - tpr) - fpr  # starts at 1 (fpr 0, tpr 0), ends at -1; non-increasing
    i = int(np.argmax(diff <= 0))
    if diff[i] == 0 or i == 0:
        return float(fpr[i])
    t = diff[i - 1] / (diff[i - 1] - diff[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def subset_rank(subset) -> tuple:
    if subset == "all":
        return (2, "")
    if subset in SUBSET_ORDER:
        return (0, f"{SUBSET_ORDER.index(subset):03d}")
    return (1, str(subset))


def _video_level(df: pd.DataFrame) -> pd.DataFrame:
    labels = df.groupby("video_id", sort=True)["label"].nunique()
    if (labels > 1).any():
        bad = ", ".join(map(str, labels[labels > 1].index[:3]))
        raise ValueError(f"videos with frames of both labels: {bad}")
    return df.groupby("video_id", sort=True).agg(
        label=("label", "first"), manipulation=("manipulation", "first"), score=("score", "mean"))


def _block_key(row: dict) -> tuple:
    return tuple(None if _isna(row[k]) else row[k] for k in BLOCK_KEYS)


def _bootstrap(sample: pd.DataFrame, keep, n_boot: int, seed: int):
    """Replicate AUCs resampling the videos of ``sample[keep]`` (None when not computable)."""
    part = sample[keep]
    y = part["label"].to_numpy(dtype=int)
    if n_boot <= 0 or np.unique(y).size < 2 or not np.isfinite(part["score"].to_numpy(dtype=float)).all():
        return None
    vids = part["video_id"].to_numpy() if "video_id" in part else part.index.to_numpy()
    uniq, inv = np.unique(vids.astype(str), return_inverse=True)
    vlab = np.zeros(uniq.size, int)
    vlab[inv] = y
    counts = stats.video_resamples(vlab, n_boot, seed)
    return stats.clustered_auc(y, part["score"].to_numpy(dtype=float), inv, counts)


def _condition_rows(key: dict, df: pd.DataFrame, n_boot: int = 0, seed: int = 0,
                    boots: dict | None = None) -> list[dict]:
    rows = []
    for level in LEVELS:
        sample = df if level == "frame" else _video_level(df).reset_index()
        label = sample["label"].to_numpy(dtype=int)
        reals = label == 0
        fakes = sample.loc[~reals, "manipulation"].astype(str).unique().tolist()
        for subset in sorted(fakes, key=subset_rank) + ["all"]:
            keep = np.ones(len(sample), bool) if subset == "all" else (
                reals | ((sample["manipulation"].astype(str).to_numpy() == subset) & ~reals))
            m = binary_metrics(label[keep], sample["score"].to_numpy(dtype=float)[keep])
            row = {**key, "subset": subset, "level": level, **m,
                   "n_real": int((keep & reals).sum()), "n_fake": int((keep & ~reals).sum())}
            reps = _bootstrap(sample, keep, n_boot, seed)
            row["auc_ci_low"], row["auc_ci_high"] = stats.logit_ci(m["auc"], reps if reps is not None else [])
            if boots is not None and reps is not None:
                boots.setdefault(_block_key(row), []).append(reps)
            rows.append(row)
    return rows


def _headline(block: pd.DataFrame, boots: dict | None = None) -> dict | None:
    cond = block[block["severity"].notna()]
    if cond["severity"].nunique() < 2:
        return None
    row = cond.iloc[0].to_dict()
    row.update({v: float(cond[v].mean(skipna=False)) for v in VALUES})
    reps = (boots or {}).get(_block_key(row), [])
    same = len(reps) == len(cond) and len({r.shape for r in reps}) == 1
    row["auc_ci_low"], row["auc_ci_high"] = stats.logit_ci(row["auc"], np.mean(reps, axis=0) if same else [])
    row["severity"] = _NAN
    for n in ("n_real", "n_fake"):
        row[n] = int(cond[n].iloc[0]) if cond[n].nunique() == 1 else _NAN
    return row


def _sorted(metrics: pd.DataFrame) -> pd.DataFrame:
    if metrics.empty:
        return metrics
    order = metrics.assign(
        _sub=metrics["subset"].map(subset_rank),
        _lvl=metrics["level"].map(lambda v: LEVELS.index(v) if v in LEVELS else len(LEVELS)),
        _head=metrics["severity"].notna())  # headline (empty severity) first in its block
    keys = ["protocol", "method", "seed", "train_set", "test_set", "quality", "perturbation",
            "_lvl", "_sub", "_head", "severity"]
    order = order.sort_values(keys, kind="mergesort", na_position="first")
    return order.drop(columns=["_sub", "_lvl", "_head"]).reset_index(drop=True)


def compute_metrics(scores_df: pd.DataFrame, n_boot: int = 0, boot_seed: int = 0) -> pd.DataFrame:
    """The metrics.csv frame for a scores frame (any number of protocols, methods, seeds);
    ``n_boot`` > 0 adds the video-bootstrap 95 % CI of each AUC (module docstring)."""
    need = CONDITION_KEYS + ["video_id", "label", "manipulation", "score"]
    missing = [c for c in need if c not in scores_df.columns]
    if missing:
        raise ValueError(f"scores frame lacks columns {missing}")
    rows, boots = [], {}
    for values, df in scores_df.groupby(CONDITION_KEYS, dropna=False, sort=True):
        key = {k: (_NAN if _isna(v) else v) for k, v in zip(CONDITION_KEYS, values)}
        rows.extend(_condition_rows(key, df, int(n_boot), int(boot_seed), boots))
    metrics = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    heads = [h for _, block in metrics.groupby(
        BLOCK_KEYS, dropna=False, sort=True) if (h := _headline(block, boots)) is not None]
    if heads:
        metrics = pd.concat([metrics, pd.DataFrame(heads, columns=METRIC_COLUMNS)],
                            ignore_index=True)
    metrics = _sorted(metrics)
    for c in ("seed", "severity", "n_real", "n_fake"):
        metrics[c] = pd.to_numeric(metrics[c]).astype("Int64")
    for c in VALUES + ["auc_ci_low", "auc_ci_high"]:
        metrics[c] = metrics[c].astype(float)
    return metrics[METRIC_COLUMNS]


def _isna(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def headline_rows(metrics_df: pd.DataFrame) -> pd.DataFrame:
    """One row per block: the empty-severity headline, or the block's only row."""
    out = []
    for _, block in metrics_df.groupby(BLOCK_KEYS, dropna=False, sort=False):
        head = block[block["severity"].isna()]
        if len(head):
            out.append(head.iloc[[0]])
        elif len(block) == 1:
            out.append(block)
    if not out:
        return metrics_df.iloc[0:0]
    return pd.concat(out).reset_index(drop=True)


def metrics_json(metrics_df: pd.DataFrame) -> dict:
    """Nested headline AUCs {protocol: {method: {test_set: {level: {subset: auc}}}}}."""
    head = headline_rows(metrics_df)
    out: dict = {}
    if head.empty:
        return out
    head = head.assign(perturbation=head["perturbation"].astype(object).where(
        head["perturbation"].notna(), ""))
    keys = ["protocol", "method", "test_set", "level", "subset"]
    mixed = head.groupby(keys[:-1], dropna=False)["perturbation"].transform("nunique") > 1
    head = head.assign(subset=np.where(mixed, head["perturbation"].astype(str) + ":"
                                       + head["subset"].astype(str), head["subset"].astype(str)))
    auc = head.groupby(keys, dropna=False, sort=True)["auc"].agg(lambda a: a.mean(skipna=False))
    for (protocol, method, test_set, level, subset), v in auc.items():
        node = out.setdefault(str(protocol), {}).setdefault(str(method), {})
        node = node.setdefault(str(test_set), {}).setdefault(str(level), {})
        node[str(subset)] = None if pd.isna(v) else round(float(v), 6)
    return out
