"""Face detectors on real photos (and compositions: small, rotated, occluded, two faces), and
the tracking policies that choose which faces extraction keeps."""
import cv2
import numpy as np
import pandas as pd
import pytest

import face_photos
from benchmark.data import extract as ex
from benchmark.data import faces, layout, synthff
from benchmark.errors import UserError
from benchmark.registry import FACE_DETECTORS, choices

REAL = [n for n in choices(FACE_DETECTORS) if FACE_DETECTORS.get(n).real_faces]
# measured misses (benchmarks/face_detectors.py); a newly registered detector must find every face
KNOWN_MISSES = {"haar": {"grace_hopper_rotated25", "astronaut_small", "astronaut_rotated25"}}
CASES = face_photos.all_cases()


@pytest.fixture(scope="module", params=REAL)
def detector(request):
    try:
        return request.param, FACE_DETECTORS.get(request.param)()
    except UserError as e:                      # an optional detector whose package is absent
        pytest.skip(str(e))


def test_every_real_face_detector_finds_the_faces_of_real_photos(detector):
    name, det = detector
    for case, frame, truth in CASES:
        found = det.detect_all([frame])[0]
        ious, _ = face_photos.match(found, truth)
        if case in KNOWN_MISSES.get(name, set()):
            continue
        assert all(i is not None and i >= 0.5 for i in ious), (name, case, found, ious)
    assert det.detect_all([np.full((160, 160, 3), 128, np.uint8)]) == [[]]
    [box] = det.detect([CASES[0][1]])                                   # the largest face
    assert face_photos.iou(box, face_photos.PHOTOS["grace_hopper"]["box"]) >= 0.5


def test_a_missing_optional_package_is_one_line(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_dlib(name, *a, **k):
        if name == "dlib":
            raise ImportError(name)
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_dlib)
    with pytest.raises(UserError, match=r"needs the `dlib` package.*pip install dlib-bin.*haar"):
        FACE_DETECTORS.get("dlib_hog")()


class _Fixed(faces.Detector):
    def __init__(self, found):
        self.found = found

    def detect_all(self, frames, video=None, frame_indices=None):
        return self.found[:len(frames)]


A = [(100 + 4 * i, 50, 150 + 4 * i, 100) for i in range(6)]       # the person through the video, 50 px
B = (10, 10, 90, 90)                                                # a larger face in frames 2 and 3


def test_track_keeps_the_identity_that_continues_where_largest_switches():
    found = [[A[i]] + ([B] if i in (2, 3) else []) for i in range(6)]
    found[4] = []                                                   # the person missed once
    det, frames = _Fixed(found), [None] * 6
    assert faces.face_tracks(det, frames, policy="largest") == [[A[0], A[1], B, B, None, A[5]]]
    assert faces.face_tracks(det, frames, policy="track") == [[A[0], A[1], A[2], A[3], None, A[5]]]
    both = faces.face_tracks(det, frames, policy="all")
    assert both == [[A[0], A[1], A[2], A[3], None, A[5]], [None, None, B, B, None, None]]
    assert faces.face_tracks(_Fixed([[B]] + [[]] * 5), frames, policy="all") == [[B] + [None] * 5]
    with pytest.raises(UserError, match="unknown face policy 'biggest'"):
        faces.face_tracks(det, frames, policy="biggest")


def test_link_tracks_by_hand():
    # a moves 10 px (0.2 of its side: similarity 1 - 0.2/0.6), b jumps too far to continue a
    a0, a1, far = (0, 0, 50, 50), (10, 0, 60, 50), (200, 0, 250, 50)
    assert faces._similarity(a0, a1, 0.6, 1.6) == pytest.approx(1 - 0.2 / 0.6)
    assert faces._similarity(a0, far, 0.6, 1.6) == 0.0
    assert faces._similarity(a0, (0, 0, 90, 90), 0.6, 1.6) == 0.0              # 1.8x larger: another face
    assert faces.link_tracks([[a0], [far, a1]]) == [[a0, a1], [None, far]]
    assert faces.link_tracks([[a0], [], [], [], [], [a1]]) == [[a0, None, None, None, None, None],
                                                               [None, None, None, None, None, a1]]  # gap > 3


def _two_face_video(path, n=4):
    """Grace Hopper twice, side by side (the right one mirrored and smaller), drifting right."""
    img = face_photos.load("grace_hopper")
    left = cv2.resize(img, (160, 188), interpolation=cv2.INTER_AREA)
    right = cv2.resize(img[:, ::-1], (128, 150), interpolation=cv2.INTER_AREA)
    frame = np.full((188, 320, 3), 120, np.uint8)
    frame[:, :160], frame[20:170, 176:304] = left, right
    path.parent.mkdir(parents=True, exist_ok=True)
    synthff.encode(path, [np.roll(frame, 2 * i, axis=1) for i in range(n)], crf=18)


def test_extraction_keeps_every_tracked_face_under_policy_all(tmp_path):
    root = tmp_path / "ffiw"
    for kind in ("source", "target"):
        _two_face_video(root / kind / "test" / "00000.mp4")
    ds = ex.build_dataset({"name": "ffiw", "root": str(root)})
    opts = dict(frames_per_video=4, size=32, qualities=["c23"], detector="haar", progress=False)
    one = ex.extract(ds, tmp_path / "track", **opts)
    every = ex.extract(ds, tmp_path / "all", **opts, face_policy="all")
    m1, m2 = (pd.read_parquet(tmp_path / d / "manifest.parquet") for d in ("track", "all"))
    assert set(m1.face) == {0} and len(m1) == 2 * 4 and one["face_policy"] == "track"
    assert sorted(m2.groupby("face").size().tolist()) == [8, 8] and every["face_policy"] == "all"
    assert (m2.groupby(["video_id", "frame_idx"]).size() == 2).all()
    big = m2[m2.face == 0]
    assert ((big.x1 - big.x0) > (m2[m2.face == 1].x1 - m2[m2.face == 1].x0).to_numpy()).all()  # tracks ordered
    assert (m2[m2.video_id == "target/00000"].label == 1).all()           # each face: the video's label
    assert m2.path.nunique() == 2                                          # still one shard per video
    assert layout.COLUMNS[0] == "video_id"
