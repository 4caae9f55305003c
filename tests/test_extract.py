"""Face detection, crop geometry and extraction (manifest, crop store, bad inputs, atomicity)."""
import json
import shutil
import tarfile

import cv2
import numpy as np
import pandas as pd
import pytest
from matplotlib import cbook

from benchmark.data import extract as ex
from benchmark.data import faces, layout, store, synthff
from benchmark.errors import UserError
from benchmark.registry import FACE_DETECTORS

CFG = dict(seed=0, pairs=dict(train=2, val=1, test=1), frames=6, size=64, crf=dict(c23=23, c40=40))
N_VIDEOS = 8 + 4 * 8
OPTS = dict(frames_per_video=4, scale=1.3, size=32, qualities=["c23", "c40"], detector="synthff_boxes",
            progress=False)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return synthff.synthesize(CFG, tmp_path_factory.mktemp("raw") / "synthff", workers=1)


@pytest.fixture(scope="module")
def faces_dir(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("faces") / "synthff"
    ex.extract(synthff.SynthFF(root), out, **OPTS)
    return out


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return ix / (area(a) + area(b) - ix)


def test_haar_finds_grace_hoppers_face():
    bgr = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)                      # 512 wide, 600 high
    [box] = FACE_DETECTORS.get("haar")().detect([frame], {"video_id": "x", "quality": "raw", "path": "x"})
    # hand-checked on the image: eyes near (225, 200) and (308, 200), mouth near (267, 275),
    # face (brow to chin, cheek to cheek) about x 165-365, y 130-335
    for x, y in [(225, 200), (308, 200), (267, 275)]:
        assert box[0] < x < box[2] and box[1] < y < box[3]
    assert _iou(box, (165, 130, 365, 335)) > 0.6
    assert FACE_DETECTORS.get("haar")().detect([np.full((120, 120, 3), 128, np.uint8)]) == [None]


def test_square_crop_box_geometry():
    # 100×80 box centred at (70, 70); scale 1.3 -> side 130, centred: (5, 5)-(135, 135)
    assert faces.square_crop_box((20, 30, 120, 110), 1.3, (200, 200, 3)) == (5, 5, 135, 135)
    # sticking out at the top-left: shifted inside, not clipped
    assert faces.square_crop_box((0, 0, 100, 80), 1.3, (200, 200, 3)) == (0, 0, 130, 130)
    # at the bottom-right of a 200×300 (H×W) frame
    assert faces.square_crop_box((220, 140, 300, 200), 1.3, (200, 300, 3)) == (196, 96, 300, 200)
    # larger than the frame's short side: shrunk to it
    assert faces.square_crop_box((0, 0, 100, 80), 1.3, (100, 120, 3)) == (0, 0, 100, 100)
    assert faces.square_crop_box((20, 30, 120, 110), 1.3) == (5, 5, 135, 135)


def test_crop_resizes_to_size():
    frame = np.arange(200 * 200 * 3, dtype=np.uint32).reshape(200, 200, 3).astype(np.uint8)
    assert faces.crop(frame, (5, 5, 135, 135), 64).shape == (64, 64, 3)
    assert faces.crop(frame, (5, 5, 37, 37), 64).shape == (64, 64, 3)
    assert np.array_equal(faces.crop(frame, (10, 20, 42, 52), 32), frame[20:52, 10:42])


def test_sample_indices():
    assert ex.sample_indices(6, 4) == [0, 2, 3, 5]
    assert ex.sample_indices(300, 32)[:3] == [0, 10, 19] and ex.sample_indices(300, 32)[-1] == 299
    assert ex.sample_indices(3, 8) == [0, 1, 2]
    assert ex.sample_indices(10, 1) == [0]


def test_manifest_schema_and_counts(faces_dir):
    m = pd.read_parquet(faces_dir / "manifest.parquet")
    assert list(m.columns) == ex.MANIFEST_COLUMNS
    assert len(m) == N_VIDEOS * 2 * 4
    assert m.groupby(["quality", "manipulation"]).size().to_dict() == {
        (q, man): 8 * 4 for q in ("c23", "c40") for man in ("real", "DF", "F2F", "FS", "NT")}
    assert set(m.frame_idx) == {0, 2, 3, 5} and set(m.detector) == {"synthff_boxes"}
    assert m.split.value_counts().to_dict() == {"train": 160, "val": 80, "test": 80}
    assert (m.label == (m.manipulation != "real")).all()
    assert ((m.x1 - m.x0) == (m.y1 - m.y0)).all() and (m.x0 >= 0).all() and (m.y1 <= CFG["size"]).all()
    assert m.path.iloc[0] == f"crops/{m.quality.iloc[0]}/{m.video_id.iloc[0]}.tar" and set(m.face) == {0}
    # one shard per video and quality: files grow with videos, not frames
    assert m.path.nunique() == 2 * N_VIDEOS == len(list((faces_dir / "crops").rglob("*.tar")))
    assert json.loads((faces_dir / "store.json").read_text())["stage"] == "extract"
    report = json.loads((faces_dir / "extract_report.json").read_text())
    assert report["videos_done"] == 2 * N_VIDEOS and report["videos_skipped"] == 0
    assert report["frames_written"] == len(m) and report["frames_without_face"] == 0


def test_crops_are_png_members_of_a_plain_tar(faces_dir):
    m = pd.read_parquet(faces_dir / "manifest.parquet")
    for r in m.iloc[::37].itertuples():
        with tarfile.open(faces_dir / r.path) as tar:      # any tar reader sees the same members
            member = tar.getmember(store.member_name(r.frame_idx))
            data = tar.extractfile(member).read()
        assert member.offset_data == r.offset and len(data) == r.nbytes and data[:8] == b"\x89PNG\r\n\x1a\n"
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8
        np.testing.assert_array_equal(store.read_crop(faces_dir, r), cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    assert not list(faces_dir.rglob("*.jpg")) and not list(faces_dir.rglob("*.png"))


def test_extraction_is_deterministic(root, faces_dir, tmp_path):
    out = tmp_path / "again"
    ex.extract_from_params({"name": "synthff", "root": str(root), "face_detector": "synthff_boxes"},
                           {k: v for k, v in OPTS.items() if k not in ("detector", "progress")}, out, progress=False)
    pd.testing.assert_frame_equal(*[pd.read_parquet(d / "manifest.parquet") for d in (out, faces_dir)])
    for rel in pd.read_parquet(out / "manifest.parquet").path.unique()[::7]:
        assert (out / rel).read_bytes() == (faces_dir / rel).read_bytes()


def _truncated_faststart(src, dst):
    """A 24-frame video made of ``src``'s frames with the index (moov) first, cut at 80 %."""
    import av
    frames = synthff.decode(src) * 4
    with av.open(str(dst), "w", options={"movflags": "faststart"}) as box:
        st = box.add_stream("libx264", rate=25)
        st.height, st.width = frames[0].shape[:2]
        st.pix_fmt = "yuv420p"
        for f in frames:
            box.mux(st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        box.mux(st.encode(None))
    data = dst.read_bytes()
    dst.write_bytes(data[: int(len(data) * 0.8)])


def test_bad_inputs_are_skipped_and_listed(root, tmp_path, capsys):
    tree = tmp_path / "tree"
    shutil.copytree(root, tree)
    videos = layout.real_dir(tree, "c23")
    good = sorted(videos.glob("*.mp4"))[0]
    (videos / "900.mp4").write_bytes(b"")                                   # zero bytes
    (videos / "901.mp4").write_text("this is not a video\n")                # text renamed .mp4
    (videos / "902.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])   # truncated
    shutil.copy(good, videos / "903.mp4")                                   # no face (no true box)
    _truncated_faststart(good, layout.fake_dir(tree, "DF", "c23") / "000_004.mp4")   # index first, ends early
    out = tmp_path / "faces"
    report = ex.extract(synthff.SynthFF(tree), out, **{**OPTS, "qualities": ["c23"], "frames_per_video": 10})
    skipped = {s["video_id"]: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {"real/900", "real/901", "real/902", "real/903"}
    assert "no face" in skipped["real/903"] and all("\n" not in r for r in skipped.values())
    assert report["videos_done"] == N_VIDEOS and report["videos_skipped"] == 4
    # the 6-frame videos gave all their frames, and the truncated one what it had; all recorded
    short = {s["video_id"]: s for s in report["short_videos"]}
    assert len(short) == N_VIDEOS and short["real/" + good.stem]["frames"] == 6
    assert 0 < short["DF/000_004"]["frames"] < 10 and "truncated" in short["DF/000_004"]["reason"]
    m = pd.read_parquet(out / "manifest.parquet")
    assert len(m) == (N_VIDEOS - 1) * 6 + short["DF/000_004"]["frames"]
    assert set(m[m.video_id != "DF/000_004"].frame_idx) == set(range(6))
    assert json.loads((out / "extract_report.json").read_text())["videos_skipped"] == 4
    err = capsys.readouterr().err
    for name in ("900.mp4", "901.mp4", "902.mp4", "903.mp4"):
        assert any(name in line and line.startswith("warning:") for line in err.splitlines()), name


def test_missing_root_and_failures_leave_nothing(tmp_path, root):
    missing = tmp_path / "not_there"
    with pytest.raises(UserError, match="not_there"):
        ex.extract(missing, tmp_path / "out", progress=False)
    with pytest.raises(UserError, match="not_there"):
        ex.extract(synthff.SynthFF(missing), tmp_path / "out", progress=False)
    with pytest.raises(UserError, match="metadata.parquet"):
        FACE_DETECTORS.get("synthff_boxes")(root=tmp_path)

    class Broken:
        def detect(self, frames, video, frame_indices=None):
            raise RuntimeError("detector crashed")
    with pytest.raises(RuntimeError):
        ex.extract(synthff.SynthFF(root), tmp_path / "out", **{**OPTS, "detector": Broken()})
    # no output; only the hidden work folder a rerun resumes from (no finished video in it)
    assert [p.name for p in tmp_path.iterdir()] == [".out.work"]
    assert not (tmp_path / ".out.work" / "parts").exists()


def test_frames_without_a_face_are_dropped_and_counted(root, tmp_path):
    boxes = FACE_DETECTORS.get("synthff_boxes")(root=root)

    class NoFaceInFrame0:
        name = "partial"

        def detect(self, frames, video, frame_indices=None):
            found = boxes.detect(frames, video, frame_indices)
            return [None if i == 0 else b for i, b in zip(frame_indices, found)]
    opts = {**OPTS, "qualities": ["c23"], "detector": NoFaceInFrame0()}
    report = ex.extract(synthff.SynthFF(root), tmp_path / "out", **opts)
    m = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert len(m) == N_VIDEOS * 3 and 0 not in set(m.frame_idx) and set(m.detector) == {"partial"}
    assert report["frames_without_face"] == N_VIDEOS and len(report["videos_losing_frames"]) == N_VIDEOS
    assert report["videos_done"] == N_VIDEOS and report["videos_skipped"] == 0
