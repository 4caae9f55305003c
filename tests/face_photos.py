"""Real face photos that ship inside pip packages, and compositions of them with known face
boxes (small, rotated, two faces, partly occluded): the ground truth of the detector tests
(tests/test_detectors.py) and of the comparison benchmarks/face_detectors.py.

Photos: matplotlib's sample ``grace_hopper.jpg`` (always there: matplotlib is a dependency) and
scikit-image's ``astronaut.png`` (only where scikit-image is installed or ``ASTRONAUT_PNG`` names
the file, e.g. extracted from its wheel). Boxes and landmarks were read off the images by hand:
the face from brow to chin and cheek to cheek, the two eye centres and the mouth centre.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

PHOTOS = {
    "grace_hopper": {"box": (165, 130, 365, 335), "points": [(225, 200), (308, 200), (267, 275)]},
    "astronaut": {"box": (175, 80, 278, 180), "points": [(202, 103), (250, 104), (225, 146)]},
}


def load(name: str) -> np.ndarray | None:
    """The photo as RGB uint8, or None where its package is not installed."""
    if name == "grace_hopper":
        from matplotlib import cbook
        path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    else:
        path = os.environ.get("ASTRONAUT_PNG")
        if not path:
            try:
                import skimage
                path = Path(skimage.__file__).parent / "data" / "astronaut.png"
            except ImportError:
                return None
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _scaled(face: dict, s: float, dx: float = 0, dy: float = 0) -> dict:
    x0, y0, x1, y1 = face["box"]
    return {"box": (x0 * s + dx, y0 * s + dy, x1 * s + dx, y1 * s + dy),
            "points": [(x * s + dx, y * s + dy) for x, y in face["points"]]}


def _canvas(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(90, 170, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8), (w, h))
    return base


def compositions(photo: str) -> list[tuple[str, np.ndarray, list[dict]]]:
    """(case, RGB frame, true faces [{box, points}]) for one photo; [] if it is not installed."""
    img = load(photo)
    if img is None:
        return []
    face = PHOTOS[photo]
    h, w = img.shape[:2]
    out = [(f"{photo}", img, [face])]
    # small: the face about 40 px wide, in a 320x240 frame
    s = 40 / (face["box"][2] - face["box"][0])
    small = cv2.resize(img, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA)
    frame = _canvas(240, 320, 1)
    frame[60:60 + small.shape[0], 100:100 + small.shape[1]] = small[:180, :220]
    out.append((f"{photo}_small", frame, [_scaled(face, s, 100, 60)]))
    # rotated by 25 degrees about the face centre (the true box: same size, centred there)
    cx, cy = (face["box"][0] + face["box"][2]) / 2, (face["box"][1] + face["box"][3]) / 2
    m = cv2.getRotationMatrix2D((cx, cy), 25, 1.0)
    rot = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    pts = [tuple(m @ np.array([x, y, 1.0])) for x, y in face["points"]]
    out.append((f"{photo}_rotated25", rot, [{"box": face["box"], "points": pts}]))
    # partly occluded: a grey band over the lower third of the face (mouth and chin)
    occ = img.copy()
    x0, y0, x1, y1 = face["box"]
    occ[int(y1 - (y1 - y0) / 3):int(y1), int(x0):int(x1)] = 128
    out.append((f"{photo}_occluded", occ, [{"box": face["box"], "points": face["points"][:2]}]))
    return out


def two_faces() -> tuple[str, np.ndarray, list[dict]] | None:
    """Both photos side by side in one frame (None without the astronaut)."""
    a, b = load("grace_hopper"), load("astronaut")
    if a is None or b is None:
        return None
    sa, sb = 0.5, 0.75
    ra = cv2.resize(a, None, fx=sa, fy=sa, interpolation=cv2.INTER_AREA)
    rb = cv2.resize(b, None, fx=sb, fy=sb, interpolation=cv2.INTER_AREA)
    frame = _canvas(max(ra.shape[0], rb.shape[0]), ra.shape[1] + rb.shape[1], 2)
    frame[:ra.shape[0], :ra.shape[1]] = ra
    frame[:rb.shape[0], ra.shape[1]:] = rb
    return ("two_faces", frame, [_scaled(PHOTOS["grace_hopper"], sa), _scaled(PHOTOS["astronaut"], sb, ra.shape[1])])


def all_cases() -> list[tuple[str, np.ndarray, list[dict]]]:
    cases = compositions("grace_hopper") + compositions("astronaut")
    pair = two_faces()
    return cases + ([pair] if pair else [])


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return ix / (area(a) + area(b) - ix) if ix > 0 else 0.0


def match(found: list, truth: list[dict], min_iou: float = 0.3) -> tuple[list[float | None], int]:
    """Per true face, the IoU of the detection that covers it (its landmarks inside, IoU >= min_iou),
    or None; and the number of detections that match no true face (false positives)."""
    used, ious = set(), []
    for t in truth:
        best, best_i = None, None
        for i, b in enumerate(found):
            inside = all(b[0] <= x <= b[2] and b[1] <= y <= b[3] for x, y in t["points"])
            v = iou(b, t["box"])
            if i not in used and inside and v >= min_iou and (best is None or v > best):
                best, best_i = v, i
        if best_i is not None:
            used.add(best_i)
        ious.append(best)
    return ious, len(found) - len(used)
