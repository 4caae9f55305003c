"""AUC uncertainty: video-resampling bootstrap CIs and paired tests that respect videos.

A video's frames are not independent (they share the face, the identity, the encoder), so
every interval and test here treats the video as the unit: frame-level AUCs get a bootstrap
that resamples videos (``video_resamples``), tested by the paired bootstrap of the difference
(``bootstrap_test``); video-level AUCs (one score per video) get DeLong's test, whose samples
are then independent. ``holm`` corrects a family of p-values (Holm 1979).

- ``video_resamples(video_labels, n_boot, seed)``: (B, V) counts, how often each video is drawn
  in each bootstrap replicate. Stratified: the reals are resampled among the reals and the fakes
  among the fakes (each class keeps its size), so every replicate has both classes and a defined
  AUC. The draw depends only on (seed, n_boot, the labels in video order), so the same videos
  give the same replicates for every method, condition and severity: CIs of a mean over
  conditions (``percentile_ci`` of the averaged replicate AUCs) use common resamples.
- ``weighted_auc(labels, scores, weights)``: AUC (ties count 1/2) with per-sample weights,
  vectorised over the rows of ``weights`` (B, N). Resampling videos = weighting each frame by
  its video's count, so a frame-level replicate keeps all frames of a drawn video together.
- ``clustered_auc(labels, scores, groups, counts)``: the same for video counts, fast (via the
  fake-video × real-video matrix of summed pair scores); what the metrics use.
- ``percentile_ci(aucs, level)``: the percentile interval of the replicate AUCs.
- ``logit_ci(auc, aucs, level)``: the interval the metrics report: auc ± z · sd on the logit
  scale, sd = the standard deviation of the replicates' logits, mapped back to [0, 1]. On
  simulated clustered scores (``benchmark.evaluation.simulate``, ``benchmarks/ci_coverage.py``) it
  holds its level where the percentile interval falls short (small real-video counts, high AUC);
  an AUC of 0 or 1, or replicates without spread, fall back to the percentile interval.
- ``bootstrap_test(diff, replicate_diffs)``: two-sided p of "no difference" from the paired
  bootstrap of AUC_a - AUC_b (the same video resamples for both methods): twice the smaller tail
  mass beyond 0, (1 + count) / (1 + B) so it is never 0; z = diff / sd(replicates).
- ``holm(p_values)``: Holm's step-down adjusted p-values (NaN stays NaN, not counted).
- ``delong_components(labels, scores)``: (auc, V10 per positive, V01 per negative) of
  DeLong, DeLong & Clarke-Pearson (Biometrics 1988): V10(x_i) = mean_j psi(x_i, y_j),
  V01(y_j) = mean_i psi(x_i, y_j), psi = 1 if x > y, 1/2 if equal, 0 otherwise (x positive,
  y negative scores).
- ``delong_paired(comp_a, comp_b)``: the paired test of AUC_a = AUC_b on the same samples:
  S10, S01 the 2x2 sample covariances of the V10 / V01 columns, var(diff) = (S10_aa + S10_bb
  - 2 S10_ab)/m + (S01_aa + S01_bb - 2 S01_ab)/n, z = diff / sqrt(var), two-sided p =
  erfc(|z|/sqrt 2). A mean of AUCs over conditions on the same samples has the mean of the
  per-condition components as its components, so the test applies to headline AUCs too.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtri


def video_resamples(video_labels, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, V) int counts: stratified bootstrap of videos (see the module docstring)."""
    y = np.asarray(video_labels, dtype=int).ravel()
    rng = np.random.default_rng([int(seed), int(n_boot), y.size])
    b = int(n_boot)
    counts = np.zeros(b * y.size, dtype=np.int64)
    offsets = (np.arange(b) * y.size)[:, None]
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        if idx.size:
            draw = idx[rng.integers(0, idx.size, size=(b, idx.size))]
            counts += np.bincount((offsets + draw).ravel(), minlength=b * y.size)
    return counts.reshape(b, y.size)


def weighted_auc(labels, scores, weights) -> np.ndarray:
    """AUC of each weight row (B, N) (or one row, (N,)) -> (B,) (or a float)."""
    y = np.asarray(labels, dtype=int).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    w = np.asarray(weights, dtype=float)
    single = w.ndim == 1
    w = np.atleast_2d(w)
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])  # tie groups
    pos = (y[order] == 1)
    wp = np.add.reduceat(w[:, order] * pos, starts, axis=1)    # (B, U) positive weight per score
    wn = np.add.reduceat(w[:, order] * ~pos, starts, axis=1)   # (B, U) negative weight per score
    below = np.cumsum(wn, axis=1) - wn                          # negatives strictly below
    num = (wp * (below + 0.5 * wn)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = num / (wp.sum(axis=1) * wn.sum(axis=1))
    return float(auc[0]) if single else auc


def clustered_auc(labels, scores, groups, counts) -> np.ndarray:
    """``weighted_auc`` with each sample weighted by its group's count, computed through the
    (fake video × real video) matrix K of summed pair scores psi, so the cost of B replicates
    is two small matrix products: AUC_b = c_fake K c_real / ((c_fake·n_fake)(c_real·n_real)),
    n = frames per video. ``groups``: video index (0..V-1) per sample; ``counts``: (B, V)."""
    y = np.asarray(labels, dtype=int).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    g = np.asarray(groups, dtype=int).ravel()
    c = np.asarray(counts, dtype=float)
    fake_v, fake_g = np.unique(g[y == 1], return_inverse=True)
    real_v = np.unique(g[y == 0])
    fake_s = s[y == 1]
    k = np.zeros((fake_v.size, real_v.size))
    for j, v in enumerate(real_v):
        rs = np.sort(s[(g == v) & (y == 0)])
        lo, hi = np.searchsorted(rs, fake_s, "left"), np.searchsorted(rs, fake_s, "right")
        k[:, j] = np.bincount(fake_g, weights=lo + 0.5 * (hi - lo), minlength=fake_v.size)
    n_fake = np.bincount(fake_g, minlength=fake_v.size)
    n_real = np.array([np.sum((g == v) & (y == 0)) for v in real_v])
    cf, cr = c[:, fake_v], c[:, real_v]
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((cf @ k) * cr).sum(axis=1) / ((cf @ n_fake) * (cr @ n_real))


def percentile_ci(aucs, level: float = 0.95) -> tuple[float, float]:
    a = np.asarray(aucs, dtype=float)
    if a.size == 0 or np.isnan(a).any():
        return math.nan, math.nan
    lo, hi = np.percentile(a, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def logit_ci(auc: float, aucs, level: float = 0.95) -> tuple[float, float]:
    a = np.asarray(aucs, dtype=float)
    if a.size == 0 or np.isnan(a).any() or not math.isfinite(auc):
        return math.nan, math.nan
    inside = a[(a > 0) & (a < 1)]
    if not 0 < auc < 1 or inside.size < max(2, a.size // 2):
        return percentile_ci(a, level)
    sd = float(np.std(np.log(inside / (1 - inside)), ddof=1))
    if not sd > 0:
        return percentile_ci(a, level)
    centre, half = math.log(auc / (1 - auc)), float(ndtri(0.5 + level / 2)) * sd
    return 1 / (1 + math.exp(-(centre - half))), 1 / (1 + math.exp(-(centre + half)))


def bootstrap_test(diff: float, replicates) -> dict:
    d = np.asarray(replicates, dtype=float)
    if d.size == 0 or np.isnan(d).any() or not math.isfinite(diff):
        return {"z": math.nan, "p_value": math.nan}
    tail = min(int((d <= 0).sum()), int((d >= 0).sum()))
    p = min(1.0, 2.0 * (1 + tail) / (1 + d.size))
    sd = float(np.std(d, ddof=1)) if d.size > 1 else 0.0
    z = diff / sd if sd > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    return {"z": float(z), "p_value": 1.0 if diff == 0 and sd == 0 else float(p)}


def holm(p_values) -> np.ndarray:
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="mergesort")]
    m, running = order.size, 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        out[idx] = running
    return out


def delong_components(labels, scores) -> tuple[float, np.ndarray, np.ndarray]:
    """(AUC, V10 over positives, V01 over negatives), in sample order within each class."""
    y = np.asarray(labels, dtype=int).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    x, z = s[y == 1], s[y == 0]
    if x.size == 0 or z.size == 0:
        return math.nan, np.full(x.size, np.nan), np.full(z.size, np.nan)
    neg = np.sort(z)
    pos = np.sort(x)
    # psi summed over the other class: count strictly below + half the ties
    v10 = (np.searchsorted(neg, x, "left") + 0.5 * (np.searchsorted(neg, x, "right")
                                                    - np.searchsorted(neg, x, "left"))) / z.size
    v01 = (x.size - np.searchsorted(pos, z, "right") + 0.5 * (
        np.searchsorted(pos, z, "right") - np.searchsorted(pos, z, "left"))) / x.size
    return float(v10.mean()), v10, v01


def delong_paired(comp_a, comp_b) -> dict:
    """Paired DeLong test from two ``delong_components`` results on the same samples."""
    (auc_a, v10a, v01a), (auc_b, v10b, v01b) = comp_a, comp_b
    m, n = v10a.size, v01a.size
    out = dict(auc_a=auc_a, auc_b=auc_b, diff=auc_a - auc_b, var=math.nan, z=math.nan,
               p_value=math.nan)
    if m < 2 or n < 2 or math.isnan(auc_a) or math.isnan(auc_b):
        return out
    s10 = np.cov(np.vstack([v10a, v10b]))
    s01 = np.cov(np.vstack([v01a, v01b]))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    out["var"] = float(var)
    if var <= 0:  # identical rankings: no evidence of a difference
        out.update(z=0.0 if out["diff"] == 0 else math.copysign(math.inf, out["diff"]),
                   p_value=1.0 if out["diff"] == 0 else 0.0)
        return out
    z = out["diff"] / math.sqrt(var)
    out.update(z=float(z), p_value=float(math.erfc(abs(z) / math.sqrt(2))))
    return out


def mean_components(components: list) -> tuple[float, np.ndarray, np.ndarray]:
    """Components of the mean AUC over conditions on the same (aligned) samples."""
    aucs = [c[0] for c in components]
    return (float(np.mean(aucs)), np.mean([c[1] for c in components], axis=0),
            np.mean([c[2] for c in components], axis=0))
