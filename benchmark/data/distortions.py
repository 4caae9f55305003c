"""Whole-frame distortions of DeeperForensics-1.0 (Jiang et al., "DeeperForensics-1.0: A
Large-Scale Dataset for Real-World Face Forgery Detection", CVPR 2020) for the robustness
protocol (DPL paper Fig. 7), registered in ``benchmark.registry.DISTORTIONS`` by code.

Parameters per severity 1..5 are exactly DESIGN §9's table (the values DeeperForensics
published); the implementation is written from those definitions, not from their code:

  CS      colour saturation: RGB -> full-range BT.601 YCbCr in [0, 1], Cb and Cr scaled about
          0.5 by p = 0.4, 0.3, 0.2, 0.1, 0.0, back to RGB.
  CC      colour contrast: every pixel times p = 0.85, 0.725, 0.6, 0.475, 0.35.
  BW      block-wise: p × max(min(H, W) // 256, ``min_factor``) grey (128) 8×8 blocks at
          uniformly random places inside the frame, p = 16, 32, 48, 64, 80. ``min_factor``
          defaults to 0 (DeeperForensics' count: zero blocks on frames under 256 px); the
          embedded 96-px SynthFF sets it to 1 in params.yaml (``distort.options.BW``), a
          deviation it documents, or BW would leave its frames untouched.
  GNC     white Gaussian noise of variance v = 0.001, 0.002, 0.005, 0.01, 0.05 added to each
          channel of the [0, 1] YCbCr image, back to RGB.
  GB      Gaussian blur, kernel k×k, σ = k/6, k = 7, 9, 13, 17, 21 (OpenCV, border reflect 101).
  RESIZE  what DeeperForensics calls "JPEG": down-scale by p = 2, 3, 4, 5, 6 to
          (W // p, H // p), up-scale back to (W, H), both bilinear. No JPEG codec is involved,
          so it is named for what it does.
  VC      video compression: the whole decoded video re-encoded with libx264 at CRF
          30, 32, 35, 38, 40 (``synthff.encode``: yuv420p, one thread, mbtree off, 25 fps, so
          the bytes are reproducible), decoded again with OpenCV.
  JPEGQ   real JPEG (OpenCV libjpeg) of each frame at qualities 90, 70, 50, 30, 10 — offered
          beside RESIZE, not a DeeperForensics distortion.

Interface: ``levels`` (the parameter of severity 1..5), ``param(severity)``; frame-wise ones
``apply(frame, severity, rng) -> (frame, detail)`` with RGB uint8 (H, W, 3) frames, ``rng`` a
``numpy.random.Generator`` (unused by the deterministic ones), ``detail`` a JSON-able dict of
the random choices made (BW: the block corners); whole-video ones (``whole_video = True``)
``apply_video(frames, severity) -> frames``. Results are rounded to the nearest integer and
clipped to 0..255.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np

from benchmark.errors import UserError
from benchmark.registry import DISTORTIONS

SEVERITIES = (1, 2, 3, 4, 5)
# full-range BT.601 (JFIF) RGB -> YCbCr, values in [0, 1], chroma centred on 0.5
_RGB2YCC = np.array([[0.299, 0.587, 0.114],
                     [-0.168735892, -0.331264108, 0.5],
                     [0.5, -0.418687589, -0.081312411]])
_YCC2RGB = np.linalg.inv(_RGB2YCC)


def to_ycbcr(img: np.ndarray) -> np.ndarray:
    """RGB uint8 -> float YCbCr in [0, 1] (Cb, Cr centred on 0.5)."""
    ycc = (img.astype(np.float64) / 255.0) @ _RGB2YCC.T
    ycc[..., 1:] += 0.5
    return ycc


def from_ycbcr(ycc: np.ndarray) -> np.ndarray:
    """Float YCbCr in [0, 1] -> RGB uint8 (rounded, clipped)."""
    ycc = ycc.copy()
    ycc[..., 1:] -= 0.5
    return to_uint8(ycc @ _YCC2RGB.T * 255.0)


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


class Distortion:
    """A frame distortion defines ``apply(frame, severity, rng) -> (frame, detail)``; a
    whole-video one sets ``whole_video = True`` and defines ``apply_video(frames, severity)``."""
    code = "base"
    description = ""
    levels: tuple = ()
    whole_video = False

    def param(self, severity: int):
        s = int(severity)
        if s not in SEVERITIES:
            raise UserError(f"distortion {self.code}: severity {severity!r} not in 1..5")
        return self.levels[s - 1]



@DISTORTIONS.register_module(name="CS")
class ColourSaturation(Distortion):
    code, description = "CS", "colour saturation (Cb, Cr scaled about 0.5)"
    levels = (0.4, 0.3, 0.2, 0.1, 0.0)

    def apply(self, frame, severity, rng=None):
        ycc = to_ycbcr(frame)
        ycc[..., 1:] = 0.5 + self.param(severity) * (ycc[..., 1:] - 0.5)
        return from_ycbcr(ycc), {}


@DISTORTIONS.register_module(name="CC")
class ColourContrast(Distortion):
    code, description = "CC", "colour contrast (pixel × p)"
    levels = (0.85, 0.725, 0.6, 0.475, 0.35)

    def apply(self, frame, severity, rng=None):
        return to_uint8(frame.astype(np.float64) * self.param(severity)), {}


@DISTORTIONS.register_module(name="BW")
class BlockWise(Distortion):
    code, description = "BW", "block-wise grey 8×8 blocks"
    levels = (16, 32, 48, 64, 80)
    block, grey = 8, 128

    def __init__(self, min_factor: int = 0):
        self.min_factor = int(min_factor)

    def count(self, shape, severity: int) -> int:
        return self.param(severity) * max(min(shape[0], shape[1]) // 256, self.min_factor)

    def apply(self, frame, severity, rng):
        h, w = frame.shape[:2]
        n, b = self.count(frame.shape, severity), self.block
        xs = rng.integers(0, w - b + 1, size=n)
        ys = rng.integers(0, h - b + 1, size=n)
        out = frame.copy()
        for x, y in zip(xs, ys):
            out[y:y + b, x:x + b] = self.grey
        return out, {"blocks": [[int(x), int(y)] for x, y in zip(xs, ys)]}


@DISTORTIONS.register_module(name="GNC")
class GaussianNoiseColour(Distortion):
    code, description = "GNC", "white Gaussian noise in YCbCr (variance)"
    levels = (0.001, 0.002, 0.005, 0.01, 0.05)

    def noise(self, shape, severity, rng) -> np.ndarray:
        return np.sqrt(self.param(severity)) * rng.standard_normal(shape)

    def apply(self, frame, severity, rng):
        return from_ycbcr(to_ycbcr(frame) + self.noise(frame.shape, severity, rng)), {}


@DISTORTIONS.register_module(name="GB")
class GaussianBlur(Distortion):
    code, description = "GB", "Gaussian blur (kernel k, sigma k/6)"
    levels = (7, 9, 13, 17, 21)

    def apply(self, frame, severity, rng=None):
        k = self.param(severity)
        return cv2.GaussianBlur(frame, (k, k), k / 6.0), {}


@DISTORTIONS.register_module(name="RESIZE")
class DownUpScale(Distortion):
    code, description = "RESIZE", "down-scale by p and up-scale back (DeeperForensics' 'JPEG')"
    levels = (2, 3, 4, 5, 6)

    def apply(self, frame, severity, rng=None):
        p, (h, w) = self.param(severity), frame.shape[:2]
        small = cv2.resize(frame, (max(w // p, 1), max(h // p, 1)), interpolation=cv2.INTER_LINEAR)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), {}


@DISTORTIONS.register_module(name="JPEGQ")
class RealJPEG(Distortion):
    code, description = "JPEGQ", "real JPEG at fixed qualities (not DeeperForensics)"
    levels = (90, 70, 50, 30, 10)

    def apply(self, frame, severity, rng=None):
        from benchmark.data.jpeg import jpeg
        return jpeg(frame, self.param(severity)), {}


@DISTORTIONS.register_module(name="VC")
class VideoCompression(Distortion):
    code, description = "VC", "H.264 re-encode of the whole video (libx264 CRF)"
    levels = (30, 32, 35, 38, 40)
    whole_video = True

    def apply_video(self, frames, severity):
        from benchmark.data.synthff import decode, encode
        crf = self.param(severity)
        with tempfile.TemporaryDirectory(prefix="vc-") as tmp:
            path = Path(tmp) / "video.mp4"
            encode(path, frames, crf)
            out = decode(path)
        if len(out) != len(frames):
            raise RuntimeError(f"VC: re-encoded video has {len(out)} frames, expected {len(frames)}")
        return out


def get_distortion(code: str, options: dict | None = None) -> Distortion:
    """The registered distortion ``code`` built with its options (params ``distort.options``)."""
    from benchmark.registry import get
    return get(DISTORTIONS, code)(**((options or {}).get(code) or {}))
