"""Do the harness's statistics hold? A simulation (a benchmark, not a test; the suite runs a
small version in tests/test_statistics.py).

    python benchmarks/ci_coverage.py [--datasets 1000] [--boot 1000] [--seed 0]

Scores with a known AUC, clustered by video (``benchmark.evaluation.simulate``: a video effect
shared by its frames, intra-class correlation ``icc``), at sizes like the default SynthFF test
split (20 real videos, 20 fakes per manipulation or 80 for ``all``, 8 frames) and around them.
For each scenario it prints, as ``key=value``:

- ``coverage_logit``: the fraction of datasets whose 95 % CI (what metrics.csv reports: the
  video bootstrap on the logit scale) contains the true frame-level AUC; target 0.93-0.97;
- ``coverage_percentile``: the percentile interval of the same replicates, for comparison;
- ``coverage_frames_iid``: a bootstrap that resamples frames as if independent;
- ``size_bootstrap_videos``, ``size_delong_videos``, ``size_delong_frames``: how often each paired
  test rejects a true null (two methods with equal AUC, correlated video effects) at 5 %: the
  harness's frame-level test (bootstrap over videos), its video-level test, and DeLong with
  frames as independent samples (what the frame-level test was).

Last line: ``coverage_logit_min=`` and ``coverage_logit_max=`` over the scenarios. Process CPU
time (``time.process_time``) per scenario is printed as ``cpu_s``.
"""
from __future__ import annotations

import argparse
import time

import benchmark  # noqa: F401  (torchvision shim)
from benchmark.evaluation import simulate

# (n_real videos, n_fake videos, frames per video, true frame-level AUC, icc)
SCENARIOS = [(20, 20, 8, 0.8, 0.5), (20, 80, 8, 0.8, 0.5), (20, 80, 8, 0.9, 0.5), (20, 80, 8, 0.95, 0.5),
             (20, 80, 8, 0.6, 0.5), (20, 80, 8, 0.8, 0.2), (50, 200, 8, 0.8, 0.5), (10, 40, 8, 0.8, 0.5)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", type=int, default=1000)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    covered = []
    for n_real, n_fake, frames, auc, icc in SCENARIOS:
        start = time.process_time()
        cov = simulate.coverage(a.datasets, a.boot, n_real, n_fake, frames, auc, icc, a.seed)
        size = simulate.rejection_rates(a.datasets, a.boot, n_real, n_fake, frames, auc, icc, seed=a.seed + 1)
        covered.append(cov["logit"])
        print(f"n_real={n_real} n_fake={n_fake} frames={frames} auc={auc} icc={icc} datasets={a.datasets} "
              f"boot={a.boot} " + " ".join(f"coverage_{k}={v:.3f}" for k, v in cov.items()) + " "
              + " ".join(f"size_{k}={v:.3f}" for k, v in size.items())
              + f" cpu_s={time.process_time() - start:.1f}", flush=True)
    print(f"coverage_logit_min={min(covered):.3f} coverage_logit_max={max(covered):.3f}")


if __name__ == "__main__":
    main()
