"""The ``fallback`` indicator backend: image statistics standing in for CLIP (NOT CLIP).

Used when no CLIP weights can be loaded (no network, nothing cached).  It is offline,
deterministic, batched in torch (thousands of 64-px crops per second on 2 CPU cores), and
keeps the *meaning* of each indicator, not its values:

``vqi`` -- no-reference visual quality in [0, 1], higher = better (stands for P("Good photo.")):

* sharpness ``r`` = mean |3x3 Laplacian| / (mean |Y - 5x5 box mean of Y| + 1) on the luma Y
  (0..255).  The ratio of the finest detail to mid-frequency detail is largely independent of
  contrast and content; blur, down/up-sampling and strong H.264/JPEG compression lower it
  (about 2.0 for a sharp photo, 1.1 after a 5x5 Gaussian blur);
* blockiness ``b`` = mean |Y difference| across the 8x8 grid lines (columns/rows 8k-1 | 8k,
  the grid a JPEG of this very image uses) / mean |difference| elsewhere - 1, horizontal and
  vertical averaged, clamped at 0 (about 0 unblocked, 0.6 at JPEG q10);
* ``vqi = sigmoid(4 (r - 1.6) - 3 b)``.

``fii`` -- forgery identifiability in [0, 1], higher = looks more manipulated / more
identifiable (stands for P("manipulated face.")).  Generic local-inconsistency statistics
inside the face, with no knowledge of how any dataset makes its fakes.  The crop is the 1.3x
enlarged face box, so the face is its central 1/1.3; by Chebyshev radius from the crop centre
we compare the *inner* face (< 0.5) with the face *periphery* (0.5 .. 1/1.3) -- skin against
skin, so the statistics depend less on the background than a face-vs-surround comparison:

* noise mismatch ``n`` = |log(sigma_inner) - log(sigma_periphery)|, sigma = median of the
  absolute Immerkaer high-pass residual (+0.5): re-synthesised regions carry another noise level;
* blur mismatch ``s`` = |log r_inner - log r_periphery| with the sharpness ratio ``r`` above:
  smoothed or up-sampled inner-face regions;
* colour mismatch ``c`` = distance between the mean (Cb, Cr) of the inner face and of its
  periphery, in 0..255 units: blending with a different skin tone or illumination;
* visibility: traces are only identifiable where fine detail survives, so the whole-crop
  sharpness ``r`` enters too;
* ``fii = sigmoid(1.5 (3 s + n + c / 25 - 1.5) + 3 (r - 1.6))``.

Compression removes the fine-scale traces these statistics see, so fii falls as quality drops,
as the paper expects of identifiability.  All constants are fixed and were set by hand on a
real photograph (matplotlib's grace_hopper.jpg) under JPEG, H.264, blur and pasted-region
edits.  On SynthFF we only checked the compression direction (which led to the face-internal
comparison and the visibility term, so that fii does not rise with CRF); nothing was fitted to
its manipulation strengths, and these generic statistics barely track them (Spearman rho
about 0.03 on the default SynthFF; VQI vs CRF about -0.7).  Known limits: sensor noise raises
``r`` (noisy images look "sharp"); hair or glasses in the face periphery raise ``n`` and ``c``.
The per-dataset JSON reports both correlations whenever the true values are known.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.registry import INDICATORS

_FACE_RADIUS = 1.0 / 1.3   # the face box inside the 1.3x enlarged crop
_INNER_RADIUS = 0.5
_CHUNK_PIXELS = 1 << 17


def _laplace_immerkaer(y: torch.Tensor):
    """|3x3 Laplacian| and |Immerkaer residual| ([[1,-2,1],[-2,4,-2],[1,-2,1]]) of (N,1,H,W)
    as (N,H,W), replicate-padded; plain slicing is much faster than a 1-channel conv2d."""
    p = F.pad(y, (1, 1, 1, 1), mode="replicate")[:, 0]
    c = p[:, 1:-1, 1:-1]
    dxx = p[:, 1:-1, :-2] + p[:, 1:-1, 2:] - 2 * c        # [1,-2,1] along x
    dyy = p[:, :-2, 1:-1] + p[:, 2:, 1:-1] - 2 * c        # [1,-2,1] along y
    hx = p[:, :, :-2] + p[:, :, 2:] - 2 * p[:, :, 1:-1]  # [1,-2,1] along x, all rows
    imm = hx[:, :-2] + hx[:, 2:] - 2 * hx[:, 1:-1]        # then along y
    return (dxx + dyy).abs(), imm.abs()


def _box5(y: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(F.pad(y, (2, 2, 2, 2), mode="replicate"), 5, 1)


def _regions(h: int, w: int):
    yy = ((torch.arange(h) + 0.5) / h - 0.5).abs()[:, None]
    xx = ((torch.arange(w) + 0.5) / w - 0.5).abs()[None, :]
    r = 2 * torch.maximum(yy, xx)
    return r < _INNER_RADIUS, (r >= _INNER_RADIUS) & (r < _FACE_RADIUS), r >= _FACE_RADIUS


def _blockiness(y: torch.Tensor) -> torch.Tensor:
    def one(d: torch.Tensor) -> torch.Tensor:  # d: (N, L) mean |difference| at position j|j+1
        n8 = (d.shape[1] // 8) * 8
        if n8 < 16:
            return torch.zeros(d.shape[0])
        phase = d[:, :n8].reshape(d.shape[0], -1, 8).mean(1)
        return phase[:, 7] / phase[:, :7].mean(1).clamp_min(1e-3) - 1

    dh = (y[..., :, 1:] - y[..., :, :-1]).abs().mean((1, 2))
    dv = (y[..., 1:, :] - y[..., :-1, :]).abs().mean((1, 3))
    return ((one(dh) + one(dv)) / 2).clamp_min(0)


@torch.no_grad()
def fallback_scores(images: torch.Tensor) -> dict[str, np.ndarray]:
    """``vqi`` and ``fii`` (float64 arrays in [0, 1]) of RGB uint8 images ``(N, 3, H, W)``."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4 \
            or images.shape[1] != 3:
        raise ValueError("indicator backends expect an RGB uint8 tensor (N, 3, H, W)")
    n, _, h, w = images.shape
    if n == 0:
        return {"vqi": np.zeros(0), "fii": np.zeros(0)}
    if min(h, w) < 16:
        raise ValueError(f"image too small for the fallback indicators: {h}x{w} (need >= 16 px)")
    # Small chunks stay in cache and avoid re-faulting big fresh allocations, and one thread
    # avoids OpenMP hand-offs on these many small ops (which collapse on a busy machine).
    step = max(1, _CHUNK_PIXELS // (h * w))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        parts = [_scores(images[i:i + step]) for i in range(0, n, step)]
    finally:
        torch.set_num_threads(threads)
    return {k: torch.cat([p[k] for p in parts]).double().cpu().numpy() for k in ("vqi", "fii")}


def _scores(images: torch.Tensor) -> dict[str, torch.Tensor]:
    h, w = images.shape[-2:]
    x = images.float()
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b

    lap, res = _laplace_immerkaer(y)
    mid = (y - _box5(y)).abs()[:, 0]
    core = (slice(None), slice(2, h - 2), slice(2, w - 2))  # skip padded borders

    sharp = lap[core].mean((1, 2)) / (mid[core].mean((1, 2)) + 1)
    vqi = torch.sigmoid(4.0 * (sharp - 1.6) - 3.0 * _blockiness(y))

    inner, periph, _ = _regions(h, w)

    def ratio(m):
        return lap[:, m].mean(1) / (mid[:, m].mean(1) + 1) + 1e-3

    noise = ((res[:, inner].median(1).values + 0.5).log()
             - (res[:, periph].median(1).values + 0.5).log()).abs()
    blur = (ratio(inner).log() - ratio(periph).log()).abs()
    colour = torch.hypot(cb[:, 0][:, inner].mean(1) - cb[:, 0][:, periph].mean(1),
                         cr[:, 0][:, inner].mean(1) - cr[:, 0][:, periph].mean(1))
    fii = torch.sigmoid(1.5 * (3.0 * blur + noise + colour / 25.0 - 1.5) + 3.0 * (sharp - 1.6))
    return {"vqi": vqi, "fii": fii}


@INDICATORS.register_module(name="fallback")
class FallbackIndicator:
    """Offline stand-in for the CLIP indicators (see the module docstring).  NOT CLIP."""

    name = "fallback"

    def __init__(self, reason: str | None = None, device="cpu", **_ignored):
        self.reason = reason  # why auto resolution fell back, recorded for provenance
        self.device = torch.device(device)  # where the statistics are computed (params.yaml device)

    def score(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        return fallback_scores(images.to(self.device))

    def describe(self) -> dict:
        d = {"backend": "fallback",
             "model": "no-reference image statistics (sharpness, blockiness, local "
                      "noise/blur/colour mismatch); NOT CLIP",
             "weights": None, "logit_scale": None}
        if self.reason:
            d["fallback_reason"] = self.reason
        return d
