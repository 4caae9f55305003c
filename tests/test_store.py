"""The crop store: round trip, deterministic shards, resume after a SIGKILL, corrupt shards."""
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.data import extract as ex
from benchmark.data import store, synthff
from benchmark.data.frames import ConditionedFrames, TrainFrames
from benchmark.errors import UserError
from benchmark.evaluation.conditions import get_conditions

ROOT = Path(__file__).resolve().parents[1]
CFG = dict(seed=0, pairs=dict(train=2, val=1, test=1), frames=4, size=64, crf=dict(c23=23, c40=40))
OPTS = dict(frames_per_video=3, scale=1.3, size=32, qualities=["c23"], detector="synthff_boxes", progress=False)


def _images(n, seed=0, side=24):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(n)]


def test_round_trip_is_lossless_and_deterministic(tmp_path):
    imgs = _images(5)
    members = [(store.member_name(i, face=i % 2), img) for i, img in enumerate(imgs)]
    locs = store.write_shard(tmp_path / "a", "crops/c23/DF/000_001.tar", members)
    again = store.write_shard(tmp_path / "b", "crops/c23/DF/000_001.tar", members)
    assert locs == again and (tmp_path / "a/crops/c23/DF/000_001.tar").read_bytes() == \
        (tmp_path / "b/crops/c23/DF/000_001.tar").read_bytes()
    rows = pd.DataFrame(locs)
    for loc, img in zip(locs, imgs):
        np.testing.assert_array_equal(store.read_crop(tmp_path / "a", loc), img)   # lossless
    np.testing.assert_array_equal(store.read_crops(tmp_path / "a", rows), np.stack(imgs))
    with tarfile.open(tmp_path / "a/crops/c23/DF/000_001.tar") as tar:
        assert tar.getnames() == ["0000.png", "0001_1.png", "0002.png", "0003_1.png", "0004.png"]
        assert [m.offset_data for m in tar.getmembers()] == [loc["offset"] for loc in locs]
        assert {m.mtime for m in tar.getmembers()} == {0}
    assert not [p for p in (tmp_path / "a").rglob("*") if p.name.startswith(".")]   # no temporary left


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return synthff.synthesize(CFG, tmp_path_factory.mktemp("raw") / "synthff", workers=1)


_KILLABLE = """
import sys, time
import benchmark
from benchmark.data import extract as ex, faces, synthff

class Slow(faces.SynthFFBoxes):
    name = "synthff_boxes"
    def detect_all(self, frames, video, frame_indices=None):
        time.sleep(0.3)
        return super().detect_all(frames, video, frame_indices)

root, out = sys.argv[1], sys.argv[2]
ex.extract(synthff.SynthFF(root), out, frames_per_video=3, scale=1.3, size=32, qualities=["c23"],
           detector=Slow(root), progress=False)
"""


def test_extraction_killed_with_sigkill_resumes_to_the_same_store(root, tmp_path):
    whole = tmp_path / "whole"
    ex.extract(synthff.SynthFF(root), whole, **OPTS)
    out = tmp_path / "faces"
    parts = tmp_path / ".faces.work" / "parts"
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE, str(root), str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(parts.rglob("*.json"))) < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(parts.rglob("*.json")))
    assert 4 <= done < 24 and not out.exists()                 # killed mid-way, nothing swapped in
    report = ex.extract(synthff.SynthFF(root), out, **OPTS)
    assert report["videos_resumed"] >= done - 1                 # a part being written when killed may be redone
    a, b = (pd.read_parquet(d / "manifest.parquet") for d in (whole, out))
    pd.testing.assert_frame_equal(a, b)
    for rel in a.path.unique():
        assert (whole / rel).read_bytes() == (out / rel).read_bytes()
    assert not (tmp_path / ".faces.work").exists()


def test_a_shard_lost_from_the_work_folder_is_redone(root, tmp_path):
    first = _Failing(root, fail_at=6)
    with pytest.raises(KeyboardInterrupt):
        ex.extract(synthff.SynthFF(root), tmp_path / "faces", **{**OPTS, "detector": first})
    shard = next((tmp_path / ".faces.work" / "crops").rglob("*.tar"))
    shard.write_bytes(shard.read_bytes()[:100])                 # truncated: its part no longer counts
    report = ex.extract(synthff.SynthFF(root), tmp_path / "faces", **OPTS)
    assert report["videos_resumed"] == 4
    m = pd.read_parquet(tmp_path / "faces" / "manifest.parquet")
    assert all(store.read_crop(tmp_path / "faces", r).shape == (32, 32, 3) for r in m.itertuples())


class _Failing:
    name = "synthff_boxes"

    def __init__(self, root, fail_at):
        from benchmark.data.faces import SynthFFBoxes
        self.inner, self.calls, self.fail_at = SynthFFBoxes(root), 0, fail_at

    def detect_all(self, frames, video, frame_indices=None):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt("killed")
        return self.inner.detect_all(frames, video, frame_indices)


@pytest.fixture()
def faces_dir(root, tmp_path):
    out = tmp_path / "faces"
    ex.extract(synthff.SynthFF(root), out, **OPTS)
    return out


@pytest.mark.parametrize("damage, words", [("truncate", "is truncated"), ("flip", "is damaged"),
                                           ("delete", "cannot be opened")])
def test_a_corrupt_shard_is_one_line_naming_it_and_the_stage(faces_dir, damage, words):
    m = pd.read_parquet(faces_dir / "manifest.parquet")
    row = m.iloc[-1]
    shard = faces_dir / row.path
    data = bytearray(shard.read_bytes())
    if damage == "truncate":
        shard.write_bytes(bytes(data[: int(row.offset) + 10]))
    elif damage == "flip":
        data[int(row.offset) + int(row.nbytes) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
    else:
        shard.unlink()
    for read in (lambda: TrainFrames(m, faces_dir, seed=0)[len(m) - 1],
                 lambda: ConditionedFrames(m, faces_dir, get_conditions("none"), 0)[len(m) - 1],
                 lambda: store.read_crops(faces_dir, m)):
        with pytest.raises(UserError) as err:
            read()
        msg = str(err.value)
        assert "\n" not in msg and str(shard) in msg and words in msg and "`extract`" in msg
    assert TrainFrames(m, faces_dir, seed=0)[0]["image"].shape == (3, 32, 32)   # other shards still read


def test_the_error_names_the_stage_that_wrote_the_store(faces_dir):
    m = pd.read_parquet(faces_dir / "manifest.parquet")
    store.write_store_json(faces_dir, "distort")
    (faces_dir / m.path.iloc[0]).write_bytes(b"")
    with pytest.raises(UserError, match="re-run the `distort` stage"):
        store.read_crop(faces_dir, m.iloc[0])
    assert json.loads((faces_dir / "store.json").read_text())["format"] == store.FORMAT


def test_a_manifest_of_the_old_layout_is_refused(faces_dir):
    old = pd.read_parquet(faces_dir / "manifest.parquet").drop(columns=["offset", "nbytes", "crc32"])
    with pytest.raises(UserError, match=r"lacks the crop-store columns \['offset', 'nbytes', 'crc32'\]"):
        TrainFrames(old, faces_dir, seed=0)
