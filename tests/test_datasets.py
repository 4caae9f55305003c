"""Dataset adapters (FF++, FaceShifter, Celeb-DF v2, FFIW10K) on trees built here from a real face
photo, completeness checks, and resumable / parallel extraction."""
import json
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest
from matplotlib import cbook

from benchmark.pipeline import provenance
from benchmark.data import extract as ex
from benchmark.data import layout, store, synthff
from benchmark.errors import UserError
from benchmark.registry import DATASETS, get

# the official FF++ split format: a JSON list of [target, source] id strings
SPLITS = {"train": [["000", "003"]], "val": [["001", "005"]], "test": [["002", "004"]]}
MANIPS = ["DF", "F2F", "FS", "NT"]
N_REAL, N_FAKE = 6, 6 * 4                      # 2 ids per pair; TTT_SSS and SSS_TTT per manipulation
OPTS = dict(frames_per_video=3, scale=1.3, size=32, qualities=["c23"], detector="haar", progress=False)


def _face_video(path, fake: bool) -> None:
    """4 frames of Grace Hopper (128x150), moving 2 px per frame; fakes get a blurred face."""
    img = cv2.cvtColor(cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))),
                       cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (128, 150), interpolation=cv2.INTER_AREA)
    if fake:
        img[30:85, 40:95] = cv2.GaussianBlur(img[30:85, 40:95], (0, 0), 2.0)
    frames = [np.roll(img, 2 * i, axis=1) for i in range(4)]
    path.parent.mkdir(parents=True, exist_ok=True)
    synthff.encode(path, frames, crf=23)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    _face_video(d / "real.mp4", False)
    _face_video(d / "fake.mp4", True)
    return d


def _ffpp_tree(root, clips, manips=MANIPS, splits=SPLITS):
    (root / "splits").mkdir(parents=True)
    for split, pairs in splits.items():
        (root / "splits" / f"{split}.json").write_text(json.dumps(pairs, indent=1))
    for t, s in [p for pairs in splits.values() for p in pairs]:
        for i in (t, s):
            dst = layout.real_dir(root, "c23") / f"{i}.mp4"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(clips / "real.mp4", dst)
        for m in manips:
            for name in (f"{t}_{s}", f"{s}_{t}"):
                dst = layout.fake_dir(root, m, "c23") / f"{name}.mp4"
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(clips / "fake.mp4", dst)
    return root


@pytest.fixture()
def tree(tmp_path, clips):
    return _ffpp_tree(tmp_path / "ffpp", clips)


def test_official_split_json_is_parsed(tree):
    pairs = layout.read_splits(tree)
    assert pairs == {s: [tuple(p) for p in v] for s, v in SPLITS.items()}
    reals, fakes = layout.split_of_ids(pairs)
    assert reals == {"000": "train", "003": "train", "001": "val", "005": "val", "002": "test", "004": "test"}
    assert fakes["000_003"] == fakes["003_000"] == "train" and fakes["004_002"] == "test" and len(fakes) == 6


def test_ffpp_tree_goes_through_the_adapter_and_haar_extraction(tree, tmp_path):
    ds = DATASETS.get("ffpp")(root=tree)
    videos = ds.list_videos(["c23"])
    assert len(videos) == N_REAL + N_FAKE and ds.partial == []
    assert videos.groupby("manipulation").size().to_dict() == {"real": 6, "DF": 6, "F2F": 6, "FS": 6, "NT": 6}
    assert set(videos[videos.video_id.isin(["DF/000_003", "DF/003_000"])].split) == {"train"}
    assert (videos.label == (videos.manipulation != "real")).all()
    report = ex.extract(ds, tmp_path / "faces", **OPTS)
    assert report["videos_done"] == 30 and report["videos_skipped"] == 0 and report["frames_without_face"] == 0
    m = pd.read_parquet(tmp_path / "faces" / "manifest.parquet")
    assert len(m) == 30 * 3 and set(m.frame_idx) == {0, 2, 3}          # linspace(0, 3, 3) rounded
    # haar found the face: at 128x150 the eyes are near (56, 50) and (77, 50), the mouth near (67, 69)
    # in frame 0 (each frame shifts the photo 2 px right); the 1.3x square box holds all three
    for r in m[m.frame_idx == 0].itertuples():
        assert all(r.x0 < x < r.x1 and r.y0 < y < r.y1 for x, y in [(56, 50), (77, 50), (67, 69)])
        assert 60 < r.x1 - r.x0 < 100
    assert store.read_crop(tmp_path / "faces", m.iloc[0]).shape == (32, 32, 3)


def test_faceshifter_is_a_dataset_of_its_own(tmp_path, clips):
    root = _ffpp_tree(tmp_path / "ffpp", clips, manips=["FSH"])
    videos = DATASETS.get("ffpp")(root=root, manipulations=["FSH"]).list_videos("c23", splits="test")
    assert sorted(videos.video_id) == ["FSH/002_004", "FSH/004_002", "real/002", "real/004"]
    assert (root / "manipulated_sequences" / "FaceShifter" / "c23" / "videos" / "002_004.mp4").is_file()
    with pytest.raises(UserError, match=r"Deepfakes/c23/videos has 0 of the 6 videos"):
        DATASETS.get("ffpp")(root=root).list_videos("c23")       # the default DF..NT are absent


def test_missing_root_partial_tree_and_allow_partial(tree, tmp_path, monkeypatch):
    with pytest.raises(UserError, match="nowhere.*not found"):
        DATASETS.get("ffpp")(root=tmp_path / "nowhere").list_videos()
    (layout.fake_dir(tree, "NT", "c23") / "000_003.mp4").unlink()
    (layout.real_dir(tree, "c23") / "005.mp4").unlink()
    with pytest.raises(UserError) as err:
        DATASETS.get("ffpp")(root=tree).list_videos("c23")
    msg = str(err.value)
    assert "\n" not in msg and str(layout.real_dir(tree, "c23")) in msg and "5 of the 6 videos" in msg
    assert "(1 more folders incomplete)" in msg and "allow_partial" in msg
    ds = DATASETS.get("ffpp")(root=tree, allow_partial=True)
    assert len(ds.list_videos("c23")) == 28
    assert ds.partial == [{"folder": str(layout.real_dir(tree, "c23")), "found": 5, "expected": 6},
                          {"folder": str(layout.fake_dir(tree, "NT", "c23")), "found": 5, "expected": 6}]
    # the extraction report carries the shortfall, and the report's provenance notes say so
    monkeypatch.chdir(tmp_path)
    report = ex.extract_from_params({"name": "ffpp", "root": str(tree), "allow_partial": True,
                                     "face_detector": "haar"}, {**OPTS, "qualities": ["c23"]},
                                    "data/faces/ff", progress=False)
    assert report["partial"] == ds.partial and report["videos_done"] == 28
    notes = provenance.partial_notes({"datasets": {"ff": {}, "cdf": {}}})
    assert notes == [f"datasets.ff: PARTIAL dataset (allow_partial): 10 of 12 expected videos in 2 incomplete "
                     f"folder(s), e.g. {layout.real_dir(tree, 'c23')} (5 of 6)"]


@pytest.mark.parametrize("content", ["[[\"000\", \"003\"]", "{\"000\": \"003\"}", "[[\"000\"]]"])
def test_corrupt_split_json(tree, content):
    (tree / "splits" / "val.json").write_text(content)
    with pytest.raises(UserError, match=r"splits/val.json is not a JSON list of \[target, source\] pairs"):
        DATASETS.get("ffpp")(root=tree).list_videos()


def test_unreadable_video_is_skipped_and_listed(tree, tmp_path):
    (layout.fake_dir(tree, "F2F", "c23") / "001_005.mp4").write_bytes(b"\x00" * 300)
    report = ex.extract(DATASETS.get("ffpp")(root=tree), tmp_path / "faces", **OPTS)
    assert [s["video_id"] for s in report["skipped"]] == ["F2F/001_005"]
    assert "cannot be opened" in report["skipped"][0]["reason"] or "no decodable" in report["skipped"][0]["reason"]
    assert report["videos_done"] == 29
    assert "F2F/001_005" not in set(pd.read_parquet(tmp_path / "faces" / "manifest.parquet").video_id)


class _Counting:
    """The Haar detector, counting the videos it sees; raises at call ``fail_at`` (1-based)."""
    name = "haar"

    def __init__(self, fail_at=None):
        from benchmark.data.faces import HaarDetector
        self.inner, self.seen, self.fail_at = HaarDetector(), [], fail_at

    def detect(self, frames, video, frame_indices=None):
        if self.fail_at is not None and len(self.seen) + 1 == self.fail_at:
            raise KeyboardInterrupt("killed")
        self.seen.append(video["video_id"])
        return self.inner.detect(frames)


def test_killed_extraction_resumes_without_redoing_finished_videos(tree, tmp_path):
    ds = DATASETS.get("ffpp")(root=tree)
    whole = ex.extract(ds, tmp_path / "whole", **OPTS)
    first = _Counting(fail_at=12)
    with pytest.raises(KeyboardInterrupt):
        ex.extract(ds, tmp_path / "faces", **{**OPTS, "detector": first})
    assert not (tmp_path / "faces").exists() and len(first.seen) == 11
    second = _Counting()
    report = ex.extract(ds, tmp_path / "faces", **{**OPTS, "detector": second})
    assert report["videos_resumed"] == 11 and len(second.seen) == 19
    assert not set(first.seen) & set(second.seen)                       # nothing redone
    assert not (tmp_path / ".faces.work").exists()                      # work folder gone once swapped in
    a, b = (pd.read_parquet(tmp_path / d / "manifest.parquet") for d in ("whole", "faces"))
    pd.testing.assert_frame_equal(a, b)
    assert report["frames_written"] == whole["frames_written"] == 90
    for rel in b.path:
        assert (tmp_path / "faces" / rel).read_bytes() == (tmp_path / "whole" / rel).read_bytes()
    # other settings do not resume from a stale work folder
    with pytest.raises(KeyboardInterrupt):
        ex.extract(ds, tmp_path / "faces2", **{**OPTS, "detector": _Counting(fail_at=3)})
    again = ex.extract(ds, tmp_path / "faces2", **{**OPTS, "size": 24})
    assert again["videos_resumed"] == 0


def test_parallel_extraction_gives_the_same_output(tree, tmp_path):
    ds = DATASETS.get("ffpp")(root=tree)
    one = ex.extract(ds, tmp_path / "one", **OPTS)
    two = ex.extract(ds, tmp_path / "two", **OPTS, workers=2)
    assert two["workers"] == 2 and one["frames_written"] == two["frames_written"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one" / "manifest.parquet"),
                                  pd.read_parquet(tmp_path / "two" / "manifest.parquet"))


# ---------------------------------------------------------------- Celeb-DF v2 and FFIW10K
CDF_LIST = """1 Celeb-real/id0_0000.mp4
1 YouTube-real/00001.mp4
0 Celeb-synthesis/id0_id1_0000.mp4
0 Celeb-synthesis/id1_id0_0003.mp4
"""


def _celebdf(root, clips, listing=CDF_LIST):
    root.mkdir(parents=True)
    (root / "List_of_testing_videos.txt").write_text(listing)
    for line in listing.split("\n"):
        if line.strip():
            label, rel = line.split()
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(clips / ("real.mp4" if label == "1" else "fake.mp4"), root / rel)
    (root / "Celeb-real" / "id9_0009.mp4").write_bytes(b"not listed: not a test video")
    return root


def test_celebdf_list_is_parsed(tmp_path, clips):
    root = _celebdf(tmp_path / "Celeb-DF-v2", clips)
    videos = DATASETS.get("celebdf")(root=root).list_videos(["c23", "c40"])
    assert videos[["video_id", "label", "manipulation", "quality", "split"]].values.tolist() == [
        ["Celeb-synthesis/id0_id1_0000", 1, "CDF", "c23", "test"],
        ["Celeb-synthesis/id1_id0_0003", 1, "CDF", "c23", "test"],
        ["Celeb-real/id0_0000", 0, "real", "c23", "test"],
        ["YouTube-real/00001", 0, "real", "c23", "test"]]
    assert DATASETS.get("celebdf")(root=root).list_videos(["c40"]).empty      # filed under c23 only
    report = ex.extract(DATASETS.get("celebdf")(root=root), tmp_path / "faces", **OPTS)
    assert report["videos_done"] == 4 and report["frames_written"] == 12


@pytest.mark.parametrize("listing, message", [
    ("1 Celeb-real/a.mp4\n2 Celeb-real/b.mp4\n", "line 2: expected '<0|1> <folder>/<name>.mp4'"),
    ("1 Celeb-synthesis/a_b.mp4\n", "line 1: label 1 contradicts the folder of Celeb-synthesis/a_b.mp4"),
    ("0 Celeb-real/a.mp4 extra\n", "line 1: expected"),
])
def test_celebdf_bad_list(tmp_path, listing, message):
    root = tmp_path / "cdf"
    root.mkdir()
    (root / "List_of_testing_videos.txt").write_text(listing)
    with pytest.raises(UserError, match=message):
        DATASETS.get("celebdf")(root=root).list_videos()


def test_celebdf_missing_list_and_partial(tmp_path, clips):
    with pytest.raises(UserError, match="List_of_testing_videos.txt not found"):
        DATASETS.get("celebdf")(root=tmp_path).list_videos()
    root = _celebdf(tmp_path / "cdf", clips)
    (root / "Celeb-synthesis" / "id1_id0_0003.mp4").unlink()
    with pytest.raises(UserError, match=r"Celeb-synthesis has 1 of the 2 videos List_of_testing_videos.txt lists"):
        DATASETS.get("celebdf")(root=root).list_videos()
    ds = DATASETS.get("celebdf")(root=root, allow_partial=True)
    assert len(ds.list_videos()) == 3 and ds.partial[0]["found"] == 1


def test_ffiw_layout(tmp_path, clips):
    root = tmp_path / "FFIW10K"
    for kind, clip in (("source", "real.mp4"), ("target", "fake.mp4")):
        for name in ("00000", "00007"):
            (root / kind / "test").mkdir(parents=True, exist_ok=True)
            shutil.copy(clips / clip, root / kind / "test" / f"{name}.mp4")
    (root / "source" / "train").mkdir()
    shutil.copy(clips / "real.mp4", root / "source" / "train" / "09999.mp4")   # another split: ignored
    videos = DATASETS.get("ffiw")(root=root).list_videos("c23")
    assert videos[["video_id", "label", "manipulation", "split"]].values.tolist() == [
        ["target/00000", 1, "FFIW", "test"], ["target/00007", 1, "FFIW", "test"],
        ["source/00000", 0, "real", "test"], ["source/00007", 0, "real", "test"]]
    (root / "target" / "test" / "00007.mp4").unlink()
    with pytest.raises(UserError, match=r"target/test has 1 of the 2 videos"):
        DATASETS.get("ffiw")(root=root).list_videos("c23")
    with pytest.raises(UserError, match="no videos in"):
        DATASETS.get("ffiw")(root=root, split="val").list_videos("c23")


# ---------------------------------------------------------------- SynthFF stand-ins
def test_shift_appearance_by_hand():
    img = np.array([[[0.0, 127.5, 255.0]]], np.float32)
    out = synthff.shift_appearance(img, {"gain": [1.0, 0.5, 2.0], "gamma": 2.0, "offset": 4})
    # 255 * gain * (v/255)^2 + 4: (0 + 4, 255*0.5*0.25 + 4, 255*2*1 + 4)
    np.testing.assert_allclose(out, [[[4.0, 35.875, 514.0]]], rtol=1e-6)
    assert synthff.shift_appearance(img, None) is img


def test_standin_families_are_generated_in_their_folders(tmp_path):
    cfg = dict(seed=5, pairs=dict(train=0, val=0, test=1), frames=3, size=64, crf=dict(c23=23, c40=40),
               manipulations=list(synthff.STANDIN_MANIPULATIONS))
    root = synthff.synthesize(cfg, tmp_path / "standin", workers=1)
    t, s = layout.read_splits(root)["test"][0]
    real = synthff.decode(layout.real_dir(root, "raw") / f"{t}.mp4")[0].astype(int)
    for kind, folder in (("FSH", "FaceShifter"), ("CDF", "CelebDFLike"), ("FFIW", "FFIWLike")):
        path = root / "manipulated_sequences" / folder / "raw" / "videos" / f"{t}_{s}.mp4"
        fake = synthff.decode(path)[0].astype(int)
        assert 0.5 < np.abs(fake - real).mean() < 30, kind
        assert np.array_equal(fake[:4], real[:4]), kind               # the background is untouched
    ds = synthff.SynthFF(root, manipulations=list(synthff.STANDIN_MANIPULATIONS))
    videos = ds.list_videos(["c23"], "test")
    assert len(videos) == 2 + 3 * 2 and ds.partial == []
    shifted = synthff.synthesize({**cfg, "manipulations": ["FSH"], "appearance": {"gain": [1.2, 1.0, 0.8]}},
                                 tmp_path / "shifted", workers=1)
    moved = synthff.decode(layout.real_dir(shifted, "raw") / f"{t}.mp4")[0].astype(float)
    assert moved[..., 0].mean() > real[..., 0].mean() + 5 and moved[..., 2].mean() < real[..., 2].mean() - 5
    with pytest.raises(UserError, match="synthff manipulations"):
        synthff.synthesize({**cfg, "manipulations": ["XX"]}, tmp_path / "bad", workers=1)


# ---------------------------------------------------------------- paths that leave the root
@pytest.mark.parametrize("bad", ["../000", "/etc/passwd", "a/b", ".."])
def test_split_ids_that_are_not_plain_names_are_refused(tree, bad):
    (tree / "splits" / "val.json").write_text(json.dumps([[bad, "005"]]))
    with pytest.raises(UserError, match=rf"val.json, pair 0: '{bad}' is not a plain video id"):
        layout.FFPP(tree).list_videos(["c23"])


def test_a_video_symlinked_out_of_the_root_is_refused(tree, tmp_path, clips):
    link = layout.real_dir(tree, "c23") / "000.mp4"
    link.unlink()
    link.symlink_to(clips / "real.mp4")  # outside the dataset root
    with pytest.raises(UserError, match=r"000.mp4 leads to .*real.mp4, outside the dataset root"):
        layout.FFPP(tree).list_videos(["c23"])
    with pytest.raises(UserError, match="outside the dataset root"):  # extraction refuses before writing
        ex.extract(layout.FFPP(tree), tmp_path / "faces", **OPTS)
    assert not (tmp_path / "faces").exists()


def test_a_symlink_inside_the_root_is_fine(tree):
    link = layout.real_dir(tree, "c23") / "000.mp4"
    target = tree / "elsewhere.mp4"
    shutil.move(link, target)
    link.symlink_to(target)
    assert "real/000" in set(layout.FFPP(tree).list_videos(["c23"]).video_id)


@pytest.mark.parametrize("entry", ["1 ../outside/a.mp4", "1 /tmp/a.mp4", "1 Celeb-real/../../a.mp4"])
def test_celebdf_list_entries_that_leave_the_root_are_refused(tmp_path, entry):
    root = tmp_path / "cdf"
    root.mkdir()
    (root / "List_of_testing_videos.txt").write_text(entry + "\n")
    with pytest.raises(UserError, match="line 1: .* is not a plain video id"):
        get(DATASETS, "celebdf")(root=root).list_videos()


def test_ffiw_video_symlinked_out_is_refused(tmp_path, clips):
    root = tmp_path / "FFIW10K"
    for kind in ("source", "target"):
        (root / kind / "test").mkdir(parents=True)
        (root / kind / "test" / "00000.mp4").symlink_to(clips / "real.mp4")
    with pytest.raises(UserError, match="outside the dataset root"):
        get(DATASETS, "ffiw")(root=root).list_videos("c23")
