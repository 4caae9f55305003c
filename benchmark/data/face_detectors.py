"""Face detectors for real video beyond Haar, each working offline from what its pip package ships.

- ``mtcnn``: facenet-pytorch's MTCNN (Zhang et al., 2016; MIT licence), weights in the wheel.
  facenet-pytorch 2.6.0 pins ``torch<2.3``, so it is installed with ``--no-deps`` next to the
  project's torch (see pyproject.toml); it runs on the CPU here (torchvision's ``nms`` through
  ``benchmark/_tv_shim.py``). Boxes with a face probability below ``min_prob`` are dropped.
- ``dlib_hog``: dlib's HOG + linear-SVM frontal face detector (Boost licence), built into
  ``dlib-bin`` (no model file); ``upsample`` doubles the image that many times first, so faces
  smaller than its 80-px window are found.

Measured (benchmarks/face_detectors.py, 10 faces in 9 frames: grace_hopper.jpg and
scikit-image's astronaut, each also small (40-px face), rotated 25 degrees and with the lower
third of the face covered, plus both in one frame; found = landmarks inside a box with IoU >= 0.3
with the hand-read box; CPU ms per frame, one thread):

    detector   found   mean IoU   false positives   CPU ms/frame
    dlib_hog   10/10   0.81       2                 116
    mtcnn      10/10   0.76       0                 127
    haar        7/10   0.69       1                 100   (missed both rotated faces, the small astronaut)

``dlib_hog`` is the project's second detector (a dependency in pyproject.toml): it matched
MTCNN's recall with tighter boxes, and ``dlib-bin`` installs as an ordinary dependency with no
torch requirement, while facenet-pytorch's ``torch<2.3`` pin makes it a by-hand ``--no-deps``
install that ``pip install -e .`` cannot express (``mtcnn`` stays registered for those who
install it; it had no false positive). Haar stays the fast option. ``datasets.<id>.face_detector``
chooses.
"""
from __future__ import annotations

import numpy as np

from benchmark.data.faces import Box, Detector
from benchmark.errors import UserError
from benchmark.registry import FACE_DETECTORS


def _missing(package: str, install: str) -> UserError:
    return UserError(f"face_detector needs the `{package}` package, which is not installed; "
                     f"install it with `{install}`, or choose face_detector: haar")


def _use_shim_nms() -> None:
    """Where torchvision's native ops do not load (the CPU torch next to the CUDA torchvision,
    ENVIRONMENT.md), ``torchvision.ops.batched_nms`` refuses to run although the shim defines
    ``torchvision::nms``; give facenet-pytorch a batched NMS on that operator instead. A
    working torchvision (any normal install) is left alone."""
    import torch
    import torchvision.extension
    from facenet_pytorch.models.utils import detect_face
    if torchvision.extension._has_ops():
        return

    def batched_nms(boxes, scores, idxs, iou_threshold):
        if boxes.numel() == 0:
            return torch.empty((0,), dtype=torch.int64, device=boxes.device)
        shift = idxs.to(boxes) * (boxes.max() + 1)     # boxes of different images never overlap
        return torch.ops.torchvision.nms(boxes + shift[:, None], scores, float(iou_threshold))

    detect_face.batched_nms = batched_nms


@FACE_DETECTORS.register_module(name="mtcnn")
class MTCNNDetector(Detector):
    """facenet-pytorch's MTCNN on the CPU (see the module docstring)."""

    name = "mtcnn"

    def __init__(self, root=None, min_prob: float = 0.9, min_face_size: int = 20, device: str = "cpu"):
        import benchmark  # noqa: F401  (torchvision shim first)
        try:
            from facenet_pytorch import MTCNN
        except ImportError:
            raise _missing("facenet-pytorch", "pip install --no-deps facenet-pytorch==2.6.0") from None
        _use_shim_nms()
        self.model = MTCNN(keep_all=True, device=device, min_face_size=int(min_face_size), post_process=False)
        self.min_prob = float(min_prob)

    def detect_all(self, frames, video=None, frame_indices=None) -> list[list[Box]]:
        import torch
        out = []
        with torch.no_grad():
            for frame in frames:
                boxes, probs = self.model.detect(np.ascontiguousarray(frame))
                h, w = frame.shape[:2]
                keep = [] if boxes is None else [b for b, p in zip(boxes, probs) if p is not None and p >= self.min_prob]
                out.append([(max(0, int(round(b[0]))), max(0, int(round(b[1]))),
                             min(w, int(round(b[2]))), min(h, int(round(b[3])))) for b in keep])
        return out


@FACE_DETECTORS.register_module(name="dlib_hog")
class DlibHOGDetector(Detector):
    """dlib's frontal HOG detector (see the module docstring)."""

    name = "dlib_hog"

    def __init__(self, root=None, upsample: int = 1):
        try:
            import dlib
        except ImportError:
            raise _missing("dlib", "pip install dlib-bin") from None
        self.detector, self.upsample = dlib.get_frontal_face_detector(), int(upsample)

    def detect_all(self, frames, video=None, frame_indices=None) -> list[list[Box]]:
        out = []
        for frame in frames:
            h, w = frame.shape[:2]
            found = self.detector(np.ascontiguousarray(frame), self.upsample)
            out.append([(max(0, r.left()), max(0, r.top()), min(w, r.right() + 1), min(h, r.bottom() + 1))
                        for r in found])
        return out
