"""Drawing SynthFF's faces: per-identity appearance, per-video motion, one frame's render, and
the manipulations that turn a real frame into a fake one (``manipulate``; traces described in
benchmark/data/synthff.py).

Everything is analytic anti-aliased ellipses on a float RGB canvas (numpy), so a face can be
re-rendered exactly in another pose or with another identity's features, which is what the
manipulations in ``synthff`` need. All randomness comes from the generators passed in.
"""
from __future__ import annotations

import functools
import math

import cv2
import numpy as np

SKIN = np.array([[236, 200, 172], [198, 150, 116], [141, 96, 66], [96, 62, 42]], float)
HAIR = np.array([[25, 20, 18], [90, 60, 35], [200, 165, 100], [150, 70, 35], [160, 160, 160]], float)


def sample_identity(rng: np.random.Generator, size: int) -> dict:
    """Colours, geometry and textures of one identity (all lengths in px at ``size``)."""
    t = rng.uniform(0, len(SKIN) - 1)
    i = int(t)
    skin = SKIN[i] + (t - i) * (SKIN[min(i + 1, len(SKIN) - 1)] - SKIN[i]) + rng.normal(0, 6, 3)
    ax = size * rng.uniform(0.19, 0.23)
    yy = np.mgrid[0:size, 0:size][0]
    bg_noise = cv2.GaussianBlur(rng.normal(0, 1, (size, size, 3)), (0, 0), rng.uniform(1.5, 6))
    background = (rng.uniform(40, 220, 3) + (rng.uniform(-40, 40, 3)[None, None] * (yy / size)[..., None])
                  + bg_noise / (bg_noise.std() + 1e-6) * rng.uniform(6, 18))
    return dict(
        skin=skin, ax=ax, ay=ax * rng.uniform(1.2, 1.35), light=rng.uniform(0, 2 * math.pi),
        shade=rng.uniform(0.1, 0.25), hair=HAIR[rng.integers(len(HAIR))] + rng.normal(0, 8, 3),
        hair_h=rng.uniform(0.85, 1.1), fringe=rng.uniform(0.15, 0.45),
        eye_dx=rng.uniform(0.36, 0.46), eye_dy=rng.uniform(0.1, 0.2), eye_r=rng.uniform(0.15, 0.2),
        iris=rng.uniform(30, 160, 3), brow=rng.uniform(0.15, 0.25), brow_tilt=rng.uniform(-0.25, 0.25),
        nose=rng.uniform(0.2, 0.3), mouth_w=rng.uniform(0.38, 0.55), mouth_y=rng.uniform(0.45, 0.55),
        lips=skin * np.array([1.05, 0.7, 0.72]), cloth=rng.uniform(20, 230, 3),
        tex=[(rng.uniform(0.6, 2.0), rng.uniform(0.25, 0.45), rng.uniform(0, 2 * math.pi),
              rng.uniform(0, 2 * math.pi)) for _ in range(6)],   # skin texture: amp, freq, angle, phase
        background=background.astype(np.float32), grain=rng.uniform(1.0, 2.0))


def sample_motion(rng: np.random.Generator, frames: int, size: int) -> dict:
    """Per-frame head pose (centre, scale) and expression (eye openness, mouth opening)."""
    walk = np.cumsum(rng.normal(0, size / 200, (frames, 2)), axis=0)
    f = np.arange(frames)
    blink = np.ones(frames)
    if rng.random() < 0.7 and frames > 2:
        b = rng.integers(0, frames - 1)
        blink[b], blink[b + 1] = 0.1, 0.5
    return dict(
        cx=size * (0.5 + rng.uniform(-0.04, 0.04)) + walk[:, 0],
        cy=size * (0.48 + rng.uniform(-0.03, 0.03)) + walk[:, 1],
        s=1 + 0.04 * np.sin(rng.uniform(0, 6.3) + f * rng.uniform(0.2, 0.6)), eye=blink,
        mouth=np.clip(0.5 + 0.5 * np.sin(rng.uniform(0, 6.3) + f * rng.uniform(0.6, 1.4)), 0, 1)
        * rng.uniform(0.1, 0.35), brow=0.06 * np.sin(rng.uniform(0, 6.3) + f * rng.uniform(0.2, 0.8)))


def ellipse(gx, gy, cx, cy, ax, ay, angle=0.0, soft=0.8):
    """Anti-aliased ellipse mask in [0,1] with an edge about ``soft`` px wide."""
    c, s = math.cos(angle), math.sin(angle)
    u, v = ((gx - cx) * c + (gy - cy) * s) / ax, (-(gx - cx) * s + (gy - cy) * c) / ay
    return np.clip(0.5 + (1 - np.sqrt(u * u + v * v)) * min(ax, ay) / soft, 0, 1)[..., None]


@functools.lru_cache(maxsize=4)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    gy, gx = np.mgrid[0:size, 0:size].astype(np.float32)
    return gx, gy


def _blob(img, colour, cx, cy, ax, ay, angle=0.0, soft=0.8, alpha=1.0, within=None):
    """Paint an ellipse into ``img`` (in place), touching only its bounding window;
    ``within`` = (cx, cy, ax, ay) of an ellipse the blob is confined to."""
    r = max(ax, ay) + soft + 1
    win = (slice(max(int(cy - r), 0), max(int(cy + r) + 2, 0)), slice(max(int(cx - r), 0), max(int(cx + r) + 2, 0)))
    gx, gy = (g[win] for g in grid(img.shape[0]))
    mask = alpha * ellipse(gx, gy, cx, cy, ax, ay, angle, soft)
    if within is not None:
        mask = mask * ellipse(gx, gy, *within)
    img[win] += mask * (np.asarray(colour, np.float32) - img[win])


def render(p: dict, m: dict, f: int, size: int) -> tuple[np.ndarray, dict]:
    """Frame ``f`` of identity ``p`` moving by ``m``: float RGB image and face geometry."""
    gx, gy = grid(size)
    cx, cy, sc = m["cx"][f], m["cy"][f], m["s"][f]
    ax, ay = p["ax"] * sc, p["ay"] * sc
    img = p["background"].copy()
    _blob(img, p["cloth"], cx, cy + 2.1 * ay, 2.2 * ax, 1.1 * ay)
    _blob(img, p["skin"] * 0.82, cx, cy + 0.9 * ay, 0.55 * ax, 0.8 * ay)
    _blob(img, p["hair"], cx, cy - 0.2 * ay, 1.18 * ax, p["hair_h"] * ay)
    face = ellipse(gx, gy, cx, cy, ax, ay)
    u, v = (gx - cx) / sc, (gy - cy) / sc          # face coordinates: texture moves with the head
    shading = 1 + p["shade"] * (np.cos(p["light"]) * u + np.sin(p["light"]) * v) / p["ax"]
    tex = sum(a * np.cos(fr * (np.cos(th) * u + np.sin(th) * v) * 2 * math.pi / 2.5 + ph)
              for a, fr, th, ph in p["tex"])
    img += face * (p["skin"][None, None] * shading[..., None] + tex[..., None] - img)
    for side in (-1, 1):
        ex, ey, er = cx + side * p["eye_dx"] * ax, cy - p["eye_dy"] * ay, p["eye_r"] * ax
        eye = (ex, ey, er, max(0.45 * er * m["eye"][f], 0.3))
        _blob(img, (235, 232, 225), *eye)
        _blob(img, p["iris"], ex, ey, 0.5 * er, 0.5 * er, within=eye)
        _blob(img, (15, 12, 12), ex, ey, 0.22 * er, 0.22 * er, within=eye)
        by = ey - (p["brow"] + m["brow"][f]) * ay
        _blob(img, p["hair"] * 0.8, ex, by, 1.1 * er, 0.16 * er, side * p["brow_tilt"])
    ny = cy + 0.1 * ay
    _blob(img, p["skin"] * 0.7, cx + 0.05 * ax, ny, 0.09 * ax, p["nose"] * ay, soft=2, alpha=0.35)
    for side in (-1, 1):
        _blob(img, p["skin"] * 0.45, cx + side * 0.08 * ax, ny + p["nose"] * ay, 0.05 * ax, 0.03 * ay, alpha=0.6)
    my, mw = cy + p["mouth_y"] * ay, p["mouth_w"] * ax
    _blob(img, p["lips"], cx, my, mw, (0.07 + m["mouth"][f]) * ay)
    _blob(img, (60, 20, 25), cx, my, 0.8 * mw, max(m["mouth"][f] * 0.8 * ay, 0.25))
    _blob(img, p["hair"], cx, cy - ay, 1.1 * ax, p["fringe"] * ay, within=(cx, cy, ax, ay))
    box = (cx - ax, cy - ay, cx + ax, cy + ay)
    return img, dict(gx=gx, gy=gy, cx=cx, cy=cy, ax=ax, ay=ay, box=box)


def swap_identity(target: dict, source: dict) -> dict:
    """Target's head (outline, hair, skin colour, lighting) with the source's inner face."""
    keys = ("eye_dx", "eye_dy", "eye_r", "iris", "brow", "brow_tilt", "nose", "mouth_w", "mouth_y", "tex")
    return {**target, **{k: source[k] for k in keys}}


# Trace amplitude: each trace is TRACE·strength times the unit sizes in ``manipulate``.
# Calibrated on the default SynthFF (params.yaml): a from-scratch 5-layer CNN trained 6 epochs
# (Adam 1e-3) on the c23 training crops (8 frames/video, 64 px) reached, over 3 training
# seeds, test AUC 0.69-0.82 at c23 (DF 0.59-0.73, F2F 0.65-0.77, FS 0.85-0.95, NT 0.64-0.83)
# and 0.62-0.74 at c40. With traces of a few grey levels (TRACE <= 2.5) it stayed at ~0.5.
TRACE = 6.0


def manipulate(kind: str, frame, donor, g: dict, k: float, rng, grain: float) -> np.ndarray:
    """Apply manipulation ``kind`` of strength ``k`` to a target frame (float RGB).

    ``donor``: the face re-rendered in the target's pose (source identity for DF/FS, source
    expression for F2F) with its own grain; ``g``: the target frame's face geometry;
    ``grain``: the video's sensor-noise sigma. Trace sizes are TRACE·k times the unit sizes
    written below (grey levels unless said otherwise).
    """
    gx, gy, cx, cy, ax, ay = g["gx"], g["gy"], g["cx"], g["cy"], g["ax"], g["ay"]
    a = TRACE * k
    if kind == "DF":       # mask on a 3-px grid; colour step 4 (+N(0,2) per channel), ring 6
        h, w = frame.shape[:2]
        coarse = ellipse(gx[::3, ::3], gy[::3, ::3], cx, cy + 0.12 * ay, 0.72 * ax, 0.75 * ay)[..., 0] > 0.5
        m = cv2.resize(coarse.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        ring = (cv2.dilate(m, np.ones((3, 3))) - cv2.erode(m, np.ones((3, 3))))[..., None].astype(np.float32)
        m = m[..., None].astype(np.float32)
        donor = donor + a * (rng.normal(0, 2.0, 3) + rng.choice([-1, 1]) * 4.0 + 6.0 * ring)
        return frame + m * (donor - frame)
    if kind == "F2F":      # gain ±8 %, cast N(0,4), light gradient 8 per face half-width
        m = ellipse(gx, gy, cx, cy + 0.15 * ay, 0.75 * ax, 0.6 * ay, soft=3.0)
        angle = rng.uniform(0, 2 * math.pi)
        light = ((np.cos(angle) * (gx - cx) + np.sin(angle) * (gy - cy)) / ax)[..., None]
        donor = donor * (1 + a * rng.choice([-1, 1]) * 0.08) + a * (rng.normal(0, 4.0, 3) + 8.0 * light)
        return frame + m * (donor - frame)
    if kind == "FS":       # blur weight 0.25, checkerboard gain ±0.2·(phase imbalance)
        m = ellipse(gx, gy, cx, cy + 0.05 * ay, 0.86 * ax, 0.9 * ay, soft=4.0)
        out = frame + m * (donor - frame)
        m = ellipse(gx, gy, cx, cy, 1.05 * ax, 1.05 * ay, soft=3.0)
        fresh = min(a, 1) * rng.normal(0, 0.5 * grain, out.shape)   # some grain back: not plain blur
        return out + m * (_resample(out, 0.25 * a, 0.2 * a) + fresh - out)
    if kind == "NT":       # Gaussian blur, sigma 0.8 + 0.4·a px, full weight from a >= 1
        m = min(a, 1) * ellipse(gx, gy, cx, cy + 0.55 * ay, 0.65 * ax, 0.4 * ay, soft=4.0)
        return frame + m * (cv2.GaussianBlur(frame, (0, 0), 0.8 + 0.4 * a) - frame)
    if kind == "FSH":      # seamless swap, unsharp mask of amount 0.15 (sigma 1 px)
        m = ellipse(gx, gy, cx, cy + 0.05 * ay, 0.86 * ax, 0.9 * ay, soft=4.0)
        out = frame + m * (donor - frame)
        return out + m * 0.15 * a * (out - cv2.GaussianBlur(out, (0, 0), 1.0))
    if kind == "CDF":      # colour-matched donor shifted by N(0, 0.2) px per frame and axis
        m = ellipse(gx, gy, cx, cy + 0.1 * ay, 0.8 * ax, 0.85 * ay, soft=5.0)
        w = m[..., 0] > 0.5
        donor = donor - donor[w].mean(0) + frame[w].mean(0)
        dx, dy = rng.normal(0, 0.2 * a, 2)
        shift = np.float32([[1, 0, dx], [0, 1, dy]])
        donor = cv2.warpAffine(donor, shift, donor.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        return frame + m * (donor - frame)
    if kind == "FFIW":     # donor at 1/3 resolution, up-scaled, grain gone; weight 0.3 (full from a >= 3.3)
        m = ellipse(gx, gy, cx, cy + 0.05 * ay, 0.82 * ax, 0.88 * ay, soft=4.0)
        h, w = frame.shape[:2]
        low = cv2.resize(cv2.resize(donor, (w // 3, h // 3), interpolation=cv2.INTER_AREA), (w, h),
                         interpolation=cv2.INTER_LINEAR)
        donor = donor + min(0.3 * a, 1) * (low - donor)
        return frame + m * (donor - frame)
    raise ValueError(f"unknown manipulation {kind}")


def _resample(img: np.ndarray, blur: float, checker: float) -> np.ndarray:
    """×2 down-scale, then up-scale by zero insertion and an uneven 3×3 kernel, like a
    transposed convolution: mixed in with weight ``blur`` (<= 1), and the four output phases
    get gains that differ by ~``checker``·15 %: a period-2 checkerboard."""
    h, w = (d - d % 2 for d in img.shape[:2])
    small = cv2.resize(img[:h, :w], (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    kernel = np.array([[0.15, 0.5, 0.25], [0.5, 1.0, 0.6], [0.25, 0.6, 0.15]], np.float32)
    up, hit = np.zeros_like(img), np.zeros(img.shape[:2], np.float32)
    up[0:h:2, 0:w:2], hit[0:h:2, 0:w:2] = small, 1
    num = cv2.filter2D(up, -1, kernel, borderType=cv2.BORDER_REFLECT)
    den = cv2.filter2D(hit, -1, kernel, borderType=cv2.BORDER_REFLECT)[..., None]
    phase_gain = 1 + checker * (den / den.mean() - 1)
    return (img + min(blur, 1) * (num / den - img)) * phase_gain
