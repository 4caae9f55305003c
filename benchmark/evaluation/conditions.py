"""The named test-condition sets protocols use (``conditions: random_jpeg`` in ``protocols/*.yaml``).

``get_conditions(name)`` returns an instance of the class registered under that name in
``benchmark.registry.PERTURBATIONS``.  Every condition set has

- ``name`` and ``n_conditions``: the conditions are indexed ``0 .. n_conditions - 1``;
- ``severities``: the value written to the scores' ``severity`` column for each index;
- ``apply(img, condition_index, seed, key) -> (img, jpeg_quality)``: deterministic in
  ``(seed, key, condition_index)``, where ``key`` is a stable string naming the frame, e.g.
  ``f"{video_id}/{quality}/{frame_idx}"``; ``jpeg_quality`` is NaN for a condition that
  applies no JPEG (the scores' ``jpeg_quality`` column stays empty).  Random draws never
  depend on call order.

``random_jpeg`` is the test-time random JPEG of the authors' release: four conditions per
frame, quality 100 and one seeded draw from each of 30-99, 13-29 and 8-12 (inclusive); the
protocol's AUC is the mean over the four.  ``jpeg_quality`` is plain JPEG at fixed qualities
90, 70, 50, 30, 10 (severities 1-5); ``none`` is the identity.  The codec is
``benchmark.data.jpeg``.
"""
from __future__ import annotations

import abc
import math

from benchmark.data.jpeg import JPEG_RANGES, jpeg, random_jpeg_conditions
from benchmark.registry import PERTURBATIONS, get


class ConditionSet(abc.ABC):
    """Base of the registered test-condition sets (see the module docstring)."""

    name = "base"
    n_conditions = 1
    severities: tuple = (0,)

    @abc.abstractmethod
    def apply(self, img, condition_index: int, seed: int, key: str):
        """(conditioned image, the condition's parameter, e.g. the JPEG quality)."""

    def _check(self, condition_index: int) -> int:
        i = int(condition_index)
        if not 0 <= i < self.n_conditions:
            raise ValueError(f"{self.name}: condition index {condition_index} not in 0..{self.n_conditions - 1}")
        return i


@PERTURBATIONS.register_module(name="none")
class NoPerturbation(ConditionSet):
    """One condition: the image as is (severity 0, jpeg_quality NaN)."""

    name = "none"

    def apply(self, img, condition_index: int = 0, seed: int = 0, key: str = ""):
        self._check(condition_index)
        return img, math.nan


@PERTURBATIONS.register_module(name="random_jpeg")
class RandomJPEGConditions(ConditionSet):
    """The release's test-time random JPEG: condition 0 is q=100, 1-3 one draw per range."""

    name = "random_jpeg"

    def __init__(self, ranges=JPEG_RANGES):
        self.ranges = tuple((int(lo), int(hi)) for lo, hi in ranges)
        self.n_conditions = 1 + len(self.ranges)
        self.severities = tuple(range(self.n_conditions))

    def qualities(self, seed: int, key: str) -> list[int]:
        return random_jpeg_conditions(seed, key, self.ranges)

    def apply(self, img, condition_index: int, seed: int, key: str):
        q = self.qualities(seed, key)[self._check(condition_index)]
        return jpeg(img, q), q


@PERTURBATIONS.register_module(name="jpeg_quality")
class JPEGQualityConditions(ConditionSet):
    """Real JPEG at fixed qualities (default 90, 70, 50, 30, 10 = severities 1-5)."""

    name = "jpeg_quality"

    def __init__(self, qualities=(90, 70, 50, 30, 10)):
        self.quality_list = tuple(int(q) for q in qualities)
        self.n_conditions = len(self.quality_list)
        self.severities = tuple(range(1, self.n_conditions + 1))

    def apply(self, img, condition_index: int, seed: int = 0, key: str = ""):
        q = self.quality_list[self._check(condition_index)]
        return jpeg(img, q), q


def get_conditions(name: str, **kwargs) -> ConditionSet:
    """An instance of the condition set registered as ``name`` (UserError listing choices)."""
    return get(PERTURBATIONS, name)(**kwargs)
