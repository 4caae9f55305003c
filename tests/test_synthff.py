"""SynthFF generation and the FF++ layout: counts, splits, metadata, determinism, atomicity."""
import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from benchmark.data import layout, synthff
from benchmark.errors import UserError
from benchmark.registry import DATASETS

CFG = dict(seed=0, pairs=dict(train=2, val=1, test=1), frames=6, size=64, crf=dict(c23=23, c40=40))
N_VIDEOS = 8 + 4 * 8          # 2·4 pairs = 8 identities: 8 reals, 8 fakes per manipulation


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return synthff.synthesize(CFG, tmp_path_factory.mktemp("synthff") / "synthff", workers=1)


def _digests(root):
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.mp4"))}


def test_layout_counts_and_splits(root):
    pairs = layout.read_splits(root)
    assert {s: len(p) for s, p in pairs.items()} == CFG["pairs"]
    videos = layout.list_videos(root, ["raw", "c23", "c40"])
    assert len(videos) == 3 * N_VIDEOS
    assert set(videos.columns) == set(layout.COLUMNS)
    for quality in ("raw", "c23", "c40"):
        for split, plist in pairs.items():
            v = videos[(videos.quality == quality) & (videos.split == split)]
            counts = v.manipulation.value_counts().to_dict()
            assert counts == {m: 2 * len(plist) for m in ("real", "DF", "F2F", "FS", "NT")}
            ids = {i for pair in plist for i in pair}
            assert {vid.split("/")[1] for vid in v[v.label == 0].video_id} == ids
            for vid in v[v.label == 1].video_id:
                target, source = vid.split("/")[1].split("_")
                assert [target, source] in [list(p) for p in plist] or [source, target] in [list(p) for p in plist]
    assert (videos.label == (videos.manipulation != "real")).all()
    assert videos.path.map(lambda p: p.endswith(".mp4")).all()
    only_test = layout.list_videos(root, "c23", splits="test")
    assert set(only_test.split) == {"test"} and len(only_test) == 5 * 2 * CFG["pairs"]["test"]


def test_metadata(root):
    meta = pd.read_parquet(root / "metadata.parquet")
    assert {"video_id", "quality", "frame_idx", "crf", "psnr", "strength", "x0", "y0", "x1", "y1"} <= set(meta.columns)
    assert len(meta) == N_VIDEOS * 3 * CFG["frames"]
    by_q = meta.groupby("quality")
    assert np.isinf(meta[meta.quality == "raw"].psnr).all()
    assert by_q.crf.unique().map(list).to_dict() == {"raw": [0], "c23": [23], "c40": [40]}
    psnr = by_q.psnr.mean()
    assert 28 < psnr["c23"] and psnr["c40"] < psnr["c23"] - 3
    real = meta.video_id.str.startswith("real/")
    assert (meta[real].strength == 0).all()
    assert meta[~real].strength.between(*synthff.STRENGTH).all()
    assert (meta[~real].groupby("video_id").strength.nunique() == 1).all()
    size = CFG["size"]
    assert ((0 <= meta.x0) & (meta.x0 < meta.x1) & (meta.x1 <= size)).all()
    assert ((0 <= meta.y0) & (meta.y0 < meta.y1) & (meta.y1 <= size)).all()
    # a fake shares its target's face boxes (it is the target's video, altered)
    t, s = json.loads((root / "splits" / "train.json").read_text())[0]
    box = ["x0", "y0", "x1", "y1"]
    assert (meta[meta.video_id == f"DF/{t}_{s}"][box].values == meta[meta.video_id == f"real/{t}"][box].values).all()


def test_videos_decode_and_qualities_differ(root):
    name = layout.read_splits(root)["train"][0][0]
    frames = {q: synthff.decode(layout.real_dir(root, q) / f"{name}.mp4") for q in ("raw", "c23", "c40")}
    for q, fr in frames.items():
        assert len(fr) == CFG["frames"] and fr[0].shape == (CFG["size"], CFG["size"], 3) and fr[0].dtype == np.uint8
    assert not np.array_equal(frames["c23"][0], frames["c40"][0])
    err = {q: np.abs(frames[q][0].astype(int) - frames["raw"][0]).mean() for q in ("c23", "c40")}
    assert 0 < err["c23"] < err["c40"]


def test_fakes_differ_from_their_target(root):
    t, s = layout.read_splits(root)["train"][0]
    real = synthff.decode(layout.real_dir(root, "raw") / f"{t}.mp4")[0].astype(int)
    for manipulation in synthff.MANIPULATIONS:
        fake = synthff.decode(layout.fake_dir(root, manipulation, "raw") / f"{t}_{s}.mp4")[0].astype(int)
        assert 0.5 < np.abs(fake - real).mean() < 30, manipulation
        assert np.array_equal(fake[:4], real[:4]), manipulation      # the background is untouched


def test_same_seed_same_bytes_other_seed_differs(root, tmp_path):
    again = synthff.synthesize(CFG, tmp_path / "again", workers=1)
    assert _digests(again) == _digests(root)
    meta = [pd.read_parquet(r / "metadata.parquet") for r in (again, root)]
    pd.testing.assert_frame_equal(*meta)
    other = synthff.synthesize({**CFG, "seed": 1, "pairs": dict(train=1, val=0, test=0)}, tmp_path / "other", workers=1)
    assert set(_digests(other).values()).isdisjoint(_digests(root).values())


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(synthff, "encode", broken)
    with pytest.raises(RuntimeError):
        synthff.synthesize(CFG, tmp_path / "sff", workers=1)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserError, match="even size"):
        synthff.synthesize({**CFG, "size": 63}, tmp_path / "sff", workers=1)
    with pytest.raises(UserError, match="crf"):
        synthff.synthesize({k: v for k, v in CFG.items() if k != "crf"}, tmp_path / "sff", workers=1)


def test_missing_root_is_a_user_error(tmp_path):
    missing = tmp_path / "no_such_dataset"
    with pytest.raises(UserError, match="no_such_dataset"):
        layout.list_videos(missing, ["c23"])
    with pytest.raises(UserError, match="synthesize"):
        DATASETS.get("synthff")(root=missing).list_videos(["c23"])


def test_registered_datasets(root):
    ds = DATASETS.get("synthff")(root=root)
    assert isinstance(ds, DATASETS.get("ffpp"))
    assert len(ds.list_videos(["c40"], ["train", "val"])) == 5 * 2 * 3
    assert len(ds.metadata()) == N_VIDEOS * 3 * CFG["frames"]
    with pytest.raises(UserError, match="unknown quality"):
        ds.list_videos(["c99"])
