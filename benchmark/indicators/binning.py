"""Discretising VQI/FII scores into levels 1..K (the number of GRU steps in DPL).

Two binnings (``indicators.binning`` in params.yaml):

* ``quantile`` -- the paper's text: K equal-frequency bins whose edges are fitted on the
  training split only.  VQI level 1 = highest score = best quality ("perfect"); FII level 1 =
  highest P("manipulated face.") = most identifiable.  Both get the fewest steps.
* ``fixed`` -- the thresholds of the authors' release, on score x 100, K = 5:
  VQI levels 1..5 = [55,100], [50,55), [45,50), [40,45), [0,40)   on P("Good photo."), level 1
  = highest score; FII levels 1..5 = [0,50), [50,65), [65,80), [80,90), [90,100] on the
  release's FII score, which is P("genuine face."): level 1 = least genuine-looking = most
  identifiable, as the paper (§3.2) says.  Our backends give fii = P("manipulated face."), so these thresholds are
  applied to 1 - fii (``fii_score: genuine`` is stored with the edges; quantile bins are on
  fii itself, ``fii_score: manipulated``).

Edges are kept ascending in score units ([0, 1]); a score equal to an edge belongs to the bin
above it (intervals closed on the left).  Scores and edges are rounded to 1e-6 before the
comparison, so a float32 0.9 still lands on the [90, 100] side of the 90 threshold.
``round_percent`` (``indicators.round_percent``; the release: true) first rounds each score
to a whole percent (numpy's round half to even of score x 100), as the release does before
thresholding.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from benchmark.errors import UserError

BINNINGS = ("quantile", "fixed")
FIXED_EDGES = {"vqi": (0.40, 0.45, 0.50, 0.55), "fii": (0.50, 0.65, 0.80, 0.90)}
FIXED_LEVEL1 = {"vqi": "high", "fii": "low"}      # the release's direction, on its own FII score
QUANTILE_LEVEL1 = {"vqi": "high", "fii": "high"}  # the paper's direction
FII_SCORES = ("manipulated", "genuine")           # which probability the FII edges are on


def fit_quantile_edges(scores, k: int) -> np.ndarray:
    """The k-1 ascending edges of k equal-frequency bins of ``scores``."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    scores = scores[np.isfinite(scores)]
    if k < 1 or len(scores) == 0:
        raise UserError(f"cannot fit {k} indicator bins on {len(scores)} scores; need k >= 1 and "
                        f"scored training images")
    return np.quantile(scores, np.arange(1, k) / k)


def percent(scores) -> np.ndarray:
    """Scores rounded to a whole percent (round half to even of score x 100), back in [0, 1]."""
    return np.round(np.asarray(scores, dtype=np.float64) * 100.0) / 100.0


def to_levels(scores, edges, level1: str = "high") -> np.ndarray:
    """Levels 1..len(edges)+1 (int64); ``level1='high'``: the highest scores get level 1."""
    s = np.round(np.asarray(scores, dtype=np.float64), 6)
    e = np.round(np.asarray(edges, dtype=np.float64), 6)
    b = np.searchsorted(e, s, side="right")  # 0 = lowest bin
    if level1 == "high":
        return (len(e) + 1 - b).astype(np.int64)
    if level1 == "low":
        return (b + 1).astype(np.int64)
    raise ValueError(f"level1 must be 'high' or 'low', got {level1!r}")


@dataclass(eq=False)
class IndicatorLevels:
    """Edges of both indicators plus a backend: turns images into (vqi_level, fii_level)."""

    binning: str
    k: int
    vqi_edges: np.ndarray
    fii_edges: np.ndarray
    vqi_level1: str = "high"
    fii_level1: str = "high"
    fii_score: str = "manipulated"
    round_percent: bool = False
    backend: object = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.fii_score not in FII_SCORES:
            raise UserError(f"fii_score {self.fii_score!r} is not one of {', '.join(FII_SCORES)}; "
                            f"re-run the `indicators` stage")
        self.vqi_edges = np.asarray(self.vqi_edges, dtype=np.float64)
        self.fii_edges = np.asarray(self.fii_edges, dtype=np.float64)
        for name, e in (("vqi", self.vqi_edges), ("fii", self.fii_edges)):
            if e.shape != (self.k - 1,) or np.any(np.diff(e) < 0):
                raise UserError(f"{name} bin edges {e.tolist()} are not {self.k - 1} ascending "
                                f"values; re-run the `indicators` stage")

    @classmethod
    def fit(cls, vqi, fii, binning: str = "quantile", k: int = 5, backend=None, round_percent: bool = False):
        """Edges for ``binning``: quantile edges fitted on these (training) scores, or fixed."""
        rnd = bool(round_percent)
        if binning == "fixed":
            if k != 5:
                raise UserError(f"indicators.binning=fixed has 5 levels; got indicators.k={k}")
            return cls("fixed", 5, FIXED_EDGES["vqi"], FIXED_EDGES["fii"],
                       FIXED_LEVEL1["vqi"], FIXED_LEVEL1["fii"], "genuine", rnd, backend)
        if binning == "quantile":
            vqi, fii = (percent(x) if rnd else x for x in (vqi, fii))
            return cls("quantile", int(k), fit_quantile_edges(vqi, k), fit_quantile_edges(fii, k),
                       QUANTILE_LEVEL1["vqi"], QUANTILE_LEVEL1["fii"], "manipulated", rnd, backend)
        raise UserError(f"unknown indicators.binning {binning!r}; choose one of: {', '.join(BINNINGS)}")

    def __eq__(self, other) -> bool:
        return isinstance(other, IndicatorLevels) and self.to_dict() == other.to_dict()

    def levels_from_scores(self, vqi, fii=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(vqi_level, fii_level) LongTensors in 1..k from scores: ``(vqi, fii)`` arrays or
        one ``{"vqi": ..., "fii": ...}`` dict as ``score`` returns it."""
        if fii is None:
            vqi, fii = vqi["vqi"], vqi["fii"]
        vqi, fii = np.asarray(vqi, dtype=np.float64), np.asarray(fii, dtype=np.float64)
        if self.fii_score == "genuine":  # edges on P("genuine face.") = 1 - P("manipulated face.")
            fii = 1.0 - fii
        if self.round_percent:
            vqi, fii = percent(vqi), percent(fii)
        return (torch.from_numpy(to_levels(vqi, self.vqi_edges, self.vqi_level1)),
                torch.from_numpy(to_levels(fii, self.fii_edges, self.fii_level1)))

    def score(self, images: torch.Tensor) -> dict:
        """The attached backend's raw scores (dict of vqi, fii arrays)."""
        if self.backend is None:
            raise RuntimeError("IndicatorLevels has no backend attached")
        return self.backend.score(images)

    def levels(self, images: torch.Tensor, backend=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(vqi_level, fii_level) LongTensors in 1..k of RGB uint8 images (N, 3, H, W).

        Call it on exactly the images the detector sees (after any JPEG or perturbation).
        """
        backend = backend or self.backend
        if backend is None:
            raise RuntimeError("IndicatorLevels.levels needs a backend (attach one or pass it)")
        return self.levels_from_scores(backend.score(images))

    def to_dict(self) -> dict:
        return {"binning": self.binning, "k": self.k, "vqi_edges": self.vqi_edges.tolist(),
                "fii_edges": self.fii_edges.tolist(), "vqi_level1": self.vqi_level1,
                "fii_level1": self.fii_level1, "fii_score": self.fii_score, "round_percent": self.round_percent}

    @classmethod
    def from_dict(cls, d: dict, backend=None) -> "IndicatorLevels":
        try:
            return cls(d["binning"], int(d["k"]), d["vqi_edges"], d["fii_edges"],
                       d.get("vqi_level1", "high"), d.get("fii_level1", "high"), d["fii_score"],
                       bool(d.get("round_percent", False)), backend)
        except KeyError as e:
            raise UserError(f"indicator description lacks {e.args[0]!r}; re-run the `indicators` "
                            f"stage") from None
