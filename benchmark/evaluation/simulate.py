"""Scores with a known AUC, clustered by video: the data the statistics are checked on.

A frame's score is ``mu * label + u_v + e``: ``u_v ~ N(0, icc)`` is its video's effect (shared
by all its frames), ``e ~ N(0, 1 - icc)`` the frame's own noise, so frames of one video are
correlated (intra-class correlation ``icc``) exactly as a detector's scores of one video are.
Reals and fakes are different videos, so the frame-level AUC the harness estimates is
P(fake frame > real frame) = Phi(mu / sqrt 2); ``mu_for_auc`` inverts it. The video-level AUC
(video score = mean of its frames) is Phi(mu / sqrt(2 (icc + (1 - icc) / frames))).

``paired(rng, ...)`` draws two methods' scores of the same frames with the same ``mu`` (so the
null hypothesis AUC_a = AUC_b holds), their video effects correlated by ``rho``: the data a
paired test must not reject more often than its level says.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm


def mu_for_auc(auc: float) -> float:
    return math.sqrt(2.0) * float(norm.ppf(auc))


def video_auc(mu: float, icc: float, frames: int) -> float:
    return float(norm.cdf(mu / math.sqrt(2.0 * (icc + (1.0 - icc) / frames))))


def clustered(rng: np.random.Generator, n_real: int, n_fake: int, frames: int, auc: float, icc: float):
    """(labels, scores, video index) of one dataset: n_real + n_fake videos x ``frames`` frames."""
    labels_v = np.r_[np.zeros(n_real, int), np.ones(n_fake, int)]
    video = np.repeat(np.arange(labels_v.size), frames)
    u = rng.normal(0.0, math.sqrt(icc), labels_v.size)[video]
    e = rng.normal(0.0, math.sqrt(1.0 - icc), video.size)
    labels = labels_v[video]
    return labels, mu_for_auc(auc) * labels + u + e, video


def paired(rng: np.random.Generator, n_real: int, n_fake: int, frames: int, auc: float, icc: float, rho: float):
    """(labels, scores_a, scores_b, video index): two methods, equal true AUC, correlated videos."""
    labels_v = np.r_[np.zeros(n_real, int), np.ones(n_fake, int)]
    video = np.repeat(np.arange(labels_v.size), frames)
    shared = rng.normal(size=labels_v.size)
    ua, ub = (math.sqrt(icc) * (math.sqrt(rho) * shared + math.sqrt(1 - rho) * rng.normal(size=labels_v.size))
              for _ in range(2))
    labels, mu = labels_v[video], mu_for_auc(auc)
    noise = math.sqrt(1.0 - icc)
    return (labels, mu * labels + ua[video] + rng.normal(0, noise, video.size),
            mu * labels + ub[video] + rng.normal(0, noise, video.size), video)


def coverage(n_sets: int, n_boot: int, n_real: int, n_fake: int, frames: int, auc: float, icc: float,
             seed: int = 0) -> dict:
    """How often the 95 % intervals contain the true frame-level AUC over ``n_sets`` datasets:
    ``logit`` (what metrics.csv reports), ``percentile`` (the same replicates' percentile
    interval), ``frames_iid`` (a bootstrap that resamples frames as if independent)."""
    from benchmark.evaluation import stats
    rng = np.random.default_rng(seed)
    hits = {"logit": 0, "percentile": 0, "frames_iid": 0}
    video_labels = np.r_[np.zeros(n_real, int), np.ones(n_fake, int)]
    for i in range(n_sets):
        labels, scores, video = clustered(rng, n_real, n_fake, frames, auc, icc)
        reps = stats.clustered_auc(labels, scores, video, stats.video_resamples(video_labels, n_boot, i))
        est = stats.weighted_auc(labels, scores, np.ones(labels.size))
        iid = stats.clustered_auc(labels, scores, np.arange(labels.size), stats.video_resamples(labels, n_boot, i))
        for name, (lo, hi) in (("logit", stats.logit_ci(est, reps)), ("percentile", stats.percentile_ci(reps)),
                               ("frames_iid", stats.percentile_ci(iid))):
            hits[name] += lo <= auc <= hi
    return {k: v / n_sets for k, v in hits.items()}


def rejection_rates(n_sets: int, n_boot: int, n_real: int, n_fake: int, frames: int, auc: float, icc: float,
              rho: float = 0.5, seed: int = 0, alpha: float = 0.05) -> dict:
    """How often each paired test rejects AUC_a = AUC_b at ``alpha`` when it is true:
    ``bootstrap_videos`` (the harness's frame-level test), ``delong_videos`` (its video-level
    test), ``delong_frames`` (DeLong with frames as independent samples, the old frame-level test)."""
    from benchmark.evaluation import stats
    rng = np.random.default_rng(seed)
    rejected = {"bootstrap_videos": 0, "delong_videos": 0, "delong_frames": 0}
    video_labels = np.r_[np.zeros(n_real, int), np.ones(n_fake, int)]
    for i in range(n_sets):
        labels, a, b, video = paired(rng, n_real, n_fake, frames, auc, icc, rho)
        counts = stats.video_resamples(video_labels, n_boot, i)
        reps = stats.clustered_auc(labels, a, video, counts) - stats.clustered_auc(labels, b, video, counts)
        comp_a, comp_b = stats.delong_components(labels, a), stats.delong_components(labels, b)
        va, vb = np.bincount(video, a) / frames, np.bincount(video, b) / frames
        p = {"bootstrap_videos": stats.bootstrap_test(comp_a[0] - comp_b[0], reps)["p_value"],
             "delong_frames": stats.delong_paired(comp_a, comp_b)["p_value"],
             "delong_videos": stats.delong_paired(stats.delong_components(video_labels, va),
                                                  stats.delong_components(video_labels, vb))["p_value"]}
        for k, v in p.items():
            rejected[k] += v < alpha
    return {k: v / n_sets for k, v in rejected.items()}
