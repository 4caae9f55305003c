"""Face detectors (registered in FACE_DETECTORS) and the crop geometry shared by all datasets.

Every detector has one interface:

    detector = FACE_DETECTORS.get(name)(root=dataset_root)
    found = detector.detect_all(frames, video, frame_indices)   # every face: [[box, ...], ...]
    boxes = detector.detect(frames, video, frame_indices)       # the largest face or None

``frames`` are RGB uint8 arrays, ``video`` a row with at least video_id, quality and path,
``frame_indices`` the frames' indices in the video (default 0, 1, ...). A box is
(x0, y0, x1, y1) in pixels, x1/y1 exclusive. ``Detector`` gives ``detect`` from ``detect_all``.

Which faces extraction keeps (``face_tracks``, params ``datasets.<id>.faces``): ``track``
links the faces of the sampled frames into tracks (``link_tracks``) and keeps the one present
in most frames (the identity that continues; a frame where it is not found is lost rather than
taken from another person); ``largest`` takes each frame's largest face; ``all`` keeps every
track seen in at least a quarter of the frames (multi-face videos such as FFIW10K's).

- ``haar``: OpenCV's shipped frontal-face Haar cascade; works offline from the pip wheel
  and finds real faces (grace_hopper.jpg in the tests). On SynthFF's drawn faces it is
  unreliable: on the default SynthFF (seed 0, 96 px; frames 0/5/10/15 of all 220 videos of
  a quality) it returned a box on 24 % of raw frames, 24 % at c23 and 20 % at c40 (where it
  did, mean IoU 0.65-0.68 with the true box), so most frames would be lost. SynthFF
  therefore uses ``synthff_boxes`` (params.yaml ``datasets.ff.face_detector``).
- ``synthff_boxes``: the true face boxes SynthFF wrote to its metadata.parquet.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from benchmark import io
from benchmark.errors import UserError
from benchmark.registry import FACE_DETECTORS

Box = tuple[int, int, int, int]


def square_crop_box(box, scale: float = 1.3, frame_shape=None) -> Box:
    """The square crop around a face box: centred on the box, side round(scale·max(w, h)).

    Where the square sticks out of the frame it is shifted back inside rather than clipped,
    so every crop keeps the face at the same scale and stays square; only a square larger
    than the frame's short side is shrunk to that side. ``frame_shape`` = (H, W, ...);
    None leaves the box unconstrained.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(1, int(round(scale * max(x1 - x0, y1 - y0))))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if frame_shape is not None:
        side = min(side, int(frame_shape[0]), int(frame_shape[1]))
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    if frame_shape is not None:
        left = min(max(left, 0), int(frame_shape[1]) - side)
        top = min(max(top, 0), int(frame_shape[0]) - side)
    return left, top, left + side, top + side


def crop(frame: np.ndarray, box, size: int) -> np.ndarray:
    """The box's pixels resized to size×size (area averaging when shrinking, bilinear when
    enlarging)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    patch = frame[max(y0, 0):y1, max(x0, 0):x1]
    if patch.size == 0:
        raise ValueError(f"empty crop box {box} for a frame of shape {frame.shape}")
    shrink = patch.shape[0] > size or patch.shape[1] > size
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


POLICIES = ("track", "largest", "all")


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise UserError(f"unknown face policy {policy!r} (datasets.<id>.faces); choose one of: {', '.join(POLICIES)}")
    return policy


def _similarity(a, b, max_shift: float, max_scale: float) -> float:
    """How well box ``b`` continues box ``a``: 1 at the same centre and size, falling to 0 at a
    centre shift of ``max_shift`` mean sides; 0 beyond that or past a size ratio ``max_scale``."""
    sa, sb = max(a[2] - a[0], a[3] - a[1]), max(b[2] - b[0], b[3] - b[1])
    if min(sa, sb) <= 0 or max(sa, sb) / min(sa, sb) > max_scale:
        return 0.0
    shift = np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2) / ((sa + sb) / 2)
    return max(0.0, 1.0 - shift / max_shift)


def link_tracks(found: list[list], max_shift: float = 0.6, max_scale: float = 1.6, max_gap: int = 3) -> list[list]:
    """Link per-frame faces into tracks: per frame, each open track takes the face that continues
    it best (greedy, best pairs first; ``_similarity``), unmatched faces start new tracks; a track
    stays open across up to ``max_gap`` frames without its face. Returns one list per track with
    a box or None per frame, in order of appearance."""
    tracks: list[dict] = []
    for i, boxes in enumerate(found):
        pairs = sorted(((_similarity(t["last"], b, max_shift, max_scale), ti, bi)
                        for ti, t in enumerate(tracks) if i - t["at"] <= max_gap
                        for bi, b in enumerate(boxes)), reverse=True)
        taken_t, taken_b = set(), set()
        for sim, ti, bi in pairs:
            if sim > 0 and ti not in taken_t and bi not in taken_b:
                taken_t.add(ti), taken_b.add(bi)
                tracks[ti]["boxes"][i], tracks[ti]["last"], tracks[ti]["at"] = boxes[bi], boxes[bi], i
        for bi, b in enumerate(boxes):
            if bi not in taken_b:
                tracks.append({"boxes": [None] * i + [b] + [None] * (len(found) - i - 1), "last": b, "at": i})
    return [t["boxes"] for t in tracks]


def _rank(track) -> tuple:
    present = [b for b in track if b is not None]
    return (len(present), float(np.mean([(b[2] - b[0]) * (b[3] - b[1]) for b in present])) if present else 0.0)


def face_tracks(detector, frames, video=None, frame_indices=None, policy: str = "track") -> list[list]:
    """The faces extraction keeps, as tracks (a box or None per frame); tracks[0] is the main one.
    ``policy`` is ``track``, ``largest`` or ``all`` (module docstring)."""
    check_policy(policy)
    if hasattr(detector, "detect_all"):
        found = detector.detect_all(frames, video, frame_indices)
    else:   # an object with only ``detect`` (one face or None per frame)
        found = [[] if b is None else [b] for b in detector.detect(frames, video, frame_indices)]
    found = [[tuple(int(v) for v in b) for b in boxes] for boxes in found]
    if policy == "largest":
        return [[largest(boxes) for boxes in found]]
    tracks = sorted(link_tracks(found), key=_rank, reverse=True)   # stable: earlier tracks win ties
    if policy == "track" or not tracks:
        return tracks[:1]
    need = max(1, -(-len(frames) // 4))
    return [t for t in tracks if _rank(t)[0] >= need] or tracks[:1]


def largest(boxes) -> Box | None:
    """The box of largest area (first one on ties), or None."""
    best = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), default=None)
    return None if best is None else tuple(int(v) for v in best)


class Detector:
    """Base of the registered detectors: ``detect`` (largest face per frame) from ``detect_all``.
    ``real_faces``: whether it detects faces in real images (False for SynthFF's true boxes)."""

    name = "base"
    real_faces = True

    def detect_all(self, frames, video=None, frame_indices=None) -> list[list[Box]]:
        raise NotImplementedError(f"{type(self).__name__} must implement detect_all")

    def detect(self, frames, video=None, frame_indices=None) -> list[Box | None]:
        return [largest(boxes) for boxes in self.detect_all(frames, video, frame_indices)]


@FACE_DETECTORS.register_module(name="haar")
class HaarDetector(Detector):
    """OpenCV's frontal-face Haar cascade (haarcascade_frontalface_default.xml)."""

    name = "haar"
    cascade_file = "haarcascade_frontalface_default.xml"

    def __init__(self, root=None, scale_factor: float = 1.1, min_neighbors: int = 5, min_size_frac: float = 0.1):
        path = Path(cv2.data.haarcascades) / self.cascade_file
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise UserError(f"cannot load the Haar cascade {path}; reinstall opencv-python-headless 4.x")
        self.scale_factor, self.min_neighbors, self.min_size_frac = scale_factor, min_neighbors, min_size_frac

    def detect_all(self, frames, video=None, frame_indices=None) -> list[list[Box]]:
        out = []
        for frame in frames:
            gray = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
            side = max(24, int(self.min_size_frac * min(gray.shape)))
            found = self.cascade.detectMultiScale(gray, scaleFactor=self.scale_factor,
                                                  minNeighbors=self.min_neighbors, minSize=(side, side))
            out.append([(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h in found])
        return out


@FACE_DETECTORS.register_module(name="synthff_boxes")
class SynthFFBoxes(Detector):
    """The true face boxes of a SynthFF tree, read from ``root``/metadata.parquet."""

    name = "synthff_boxes"
    real_faces = False

    def __init__(self, root=None):
        path = Path(root or "") / "metadata.parquet"
        if root is None or not path.is_file():
            raise UserError(f"{path} not found: face_detector=synthff_boxes only works on a SynthFF "
                            f"tree (generate it with `python -m benchmark synthesize`); use haar otherwise")
        cols = ["video_id", "quality", "frame_idx", "x0", "y0", "x1", "y1"]
        meta = io.read_table(path, "`python -m benchmark synthesize` (the SynthFF tree is incomplete)", cols)[cols]
        self.boxes = {(v, q, int(f)): (int(a), int(b), int(c), int(d))
                      for v, q, f, a, b, c, d in meta.itertuples(index=False)}

    def detect_all(self, frames, video, frame_indices=None) -> list[list[Box]]:
        indices = range(len(frames)) if frame_indices is None else frame_indices
        found = [self.boxes.get((video["video_id"], video["quality"], int(i))) for i in indices]
        return [[b] if b is not None else [] for b in found]


def build_detector(name: str, root=None):
    """The registered detector ``name``, constructed for the dataset at ``root``."""
    from benchmark.registry import get
    return get(FACE_DETECTORS, name)(root=root)
