"""The JPEG codec (OpenCV's libjpeg, encode then decode, as the authors' release does), the
stable per-frame random streams, and the release's random-JPEG training augmentation.

* ``jpeg(img, q)``: one round trip at quality ``q``.
* ``key_rng(seed, key)``: a generator seeded from ``(seed, key)`` (SHA-256 of the key), so a
  draw for one frame never depends on which frames were drawn before.
* ``random_jpeg_conditions(seed, key)``: the four test qualities of a frame (q = 100 and one
  draw from each of 30-99, 13-29, 8-12), used by the ``random_jpeg`` test conditions
  (``benchmark.evaluation.conditions``).
* ``RandomJPEG`` (training augmentation, release default): per image, pick uniformly among
  "leave as is" and the three quality ranges (so the image is kept with probability 1/4), then
  a quality uniformly in the chosen range.  It draws from an explicit ``np.random.Generator``.

Images are RGB ``uint8``: a numpy ``(H, W, 3)`` array or a torch ``(3, H, W)`` tensor; the
result has the same type and layout.
"""
from __future__ import annotations

import hashlib

import cv2
import numpy as np
import torch

from benchmark.errors import UserError

#: Quality ranges (inclusive) of the authors' release, from mild to severe.
JPEG_RANGES: tuple[tuple[int, int], ...] = ((30, 99), (13, 29), (8, 12))


def jpeg(img, quality: int):
    """JPEG encode/decode round trip at ``quality`` (1-100) with OpenCV.

    ``img`` is RGB uint8, numpy ``(H, W, 3)`` or torch ``(3, H, W)``; returns the same type.
    """
    if isinstance(img, torch.Tensor):
        out = jpeg(img.permute(1, 2, 0).cpu().numpy(), quality)
        return torch.from_numpy(out).permute(2, 0, 1).contiguous()
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"jpeg expects an RGB uint8 (H, W, 3) image, got {img.dtype} {img.shape}")
    q = int(quality)
    if not 1 <= q <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    bgr = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, q])
    if not ok:
        raise RuntimeError("cv2.imencode failed to encode JPEG")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def key_rng(seed: int, key: str) -> np.random.Generator:
    """A generator seeded from ``(seed, key)`` with a stable hash (SHA-256, not ``hash()``)."""
    digest = int.from_bytes(hashlib.sha256(str(key).encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([int(seed), digest])


def random_jpeg_conditions(seed: int, key: str, ranges=JPEG_RANGES) -> list[int]:
    """The four test qualities of one frame: ``[100, q(30-99), q(13-29), q(8-12)]``.

    Deterministic in ``(seed, key)`` and independent of which other frames were drawn before.
    """
    rng = key_rng(seed, key)
    return [100] + [int(rng.integers(lo, hi + 1)) for lo, hi in ranges]


class RandomJPEG:
    """Training augmentation: keep the image, or JPEG it at a quality from a random range.

    With ``keep_prob=None`` the choice is uniform over "keep" and the ``len(ranges)`` ranges
    (1/4 each for the release's three ranges); otherwise the image is kept with probability
    ``keep_prob`` and the ranges share the rest equally.  The quality is uniform within the
    chosen range (inclusive).
    """

    def __init__(self, ranges=JPEG_RANGES, keep_prob: float | None = None):
        self.ranges = tuple((int(lo), int(hi)) for lo, hi in ranges)
        if not self.ranges or any(not 1 <= lo <= hi <= 100 for lo, hi in self.ranges):
            raise UserError(f"RandomJPEG ranges must be (lo, hi) pairs within 1..100, got {ranges}")
        self.keep_prob = 1.0 / (len(self.ranges) + 1) if keep_prob is None else float(keep_prob)
        if not 0.0 <= self.keep_prob <= 1.0:
            raise UserError(f"RandomJPEG keep_prob must be in [0, 1], got {keep_prob}")

    def sample(self, rng: np.random.Generator) -> int | None:
        """The quality to apply, or None to leave the image as is."""
        if rng.random() < self.keep_prob:
            return None
        lo, hi = self.ranges[int(rng.integers(len(self.ranges)))]
        return int(rng.integers(lo, hi + 1))

    def __call__(self, img, rng: np.random.Generator):
        q = self.sample(rng)
        return img if q is None else jpeg(img, q)

    def __repr__(self) -> str:
        return f"RandomJPEG(ranges={self.ranges}, keep_prob={self.keep_prob:.4g})"
