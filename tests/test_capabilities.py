"""Capabilities the engine provides on request: quality_pair and manipulation_label."""
from pathlib import Path

import benchmark  # noqa: F401  (torchvision shim)
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from benchmark.data import store
from benchmark.data.frames import MANIPULATION_IDS, PAIR_JPEG_RANGE, TrainFrames
from benchmark.engine import LevelsPreprocessor
from benchmark.errors import UserError
from benchmark.data.jpeg import jpeg

VIDEOS = [("real/000", "real", 0), ("DF/000_001", "DF", 1), ("NT/001_000", "NT", 1), ("F2F/000_001", "F2F", 1)]


@pytest.fixture()
def crops(tmp_path):
    """c23 and c40 crops of 4 videos x 2 frames in the crop store, each a distinct constant
    colour; the c40 crop of NT/001_000 frame 1 is missing (not extracted)."""
    rows = []
    for v, (vid, manip, label) in enumerate(VIDEOS):
        for q, quality in enumerate(("c23", "c40")):
            members, meta = [], []
            for f in (0, 1):
                if quality == "c40" and vid == "NT/001_000" and f == 1:
                    continue
                img = np.zeros((8, 8, 3), np.uint8)
                img[..., 0], img[..., 1], img[..., 2] = 10 * v, 100 * q, f  # RGB
                img[2:5, 3:6] = 255  # some structure, so JPEG changes something
                members.append((store.member_name(f), img))
                meta.append({"video_id": vid, "frame_idx": f, "label": label, "manipulation": manip,
                             "quality": quality, "split": "train"})
            locations = store.write_shard(tmp_path, store.shard_path(quality, vid), members)
            rows += [{**m, **loc} for m, loc in zip(meta, locations)]
    return pd.DataFrame(rows), tmp_path


def _read(root, row):
    return torch.from_numpy(store.read_crop(root, row)).permute(2, 0, 1)


def test_pairs_are_the_same_frame_at_the_other_quality(crops):
    manifest, root = crops
    c23, c40 = manifest[manifest.quality == "c23"], manifest[manifest.quality == "c40"]
    ds = TrainFrames(c23, root, seed=0, pair_manifest=c40)
    for i, row in enumerate(ds.rows.itertuples()):
        item = ds[i]
        assert item["image"].dtype == item["image_pair"].dtype == torch.uint8
        assert torch.equal(item["image"], _read(root, row))
        if (row.video_id, row.frame_idx) == ("NT/001_000", 1):
            continue
        expected = c40[(c40.video_id == row.video_id) & (c40.frame_idx == row.frame_idx)].iloc[0]
        assert torch.equal(item["image_pair"], _read(root, expected))
        assert item["image_pair"][1, 0, 0] == 100 and item["image_pair"][0, 0, 0] == item["image"][0, 0, 0]


def test_a_frame_without_counterpart_gets_a_seeded_jpeg_copy(crops):
    manifest, root = crops
    c23, c40 = manifest[manifest.quality == "c23"], manifest[manifest.quality == "c40"]
    i = c23.reset_index(drop=True).index[(c23.video_id == "NT/001_000").to_numpy() & (c23.frame_idx == 1).to_numpy()][0]
    ds = TrainFrames(c23, root, seed=3, pair_manifest=c40)
    clean = ds[i]["image"]
    lo, hi = PAIR_JPEG_RANGE
    q = int(np.random.default_rng([3, 0, i, 1]).integers(lo, hi + 1))
    assert torch.equal(ds[i]["image_pair"], jpeg(clean, q))
    assert not torch.equal(ds[i]["image_pair"], clean)
    assert torch.equal(ds[i]["image_pair"], TrainFrames(c23, root, seed=3, pair_manifest=c40)[i]["image_pair"])
    # no other quality at all: every frame is paired with its JPEG copy
    only = TrainFrames(c23, root, seed=3, pair_manifest=c23.iloc[:0])
    assert all(not torch.equal(only[j]["image_pair"], only[j]["image"]) for j in range(len(only)))


def test_the_pair_is_not_augmented(crops):
    manifest, root = crops
    c23, c40 = manifest[manifest.quality == "c23"], manifest[manifest.quality == "c40"]
    ds = TrainFrames(c23, root, seed=0, augment=lambda img, rng: 255 - img, pair_manifest=c40)
    item = ds[0]
    assert torch.equal(item["image"], 255 - _read(root, ds.rows.iloc[0]))
    assert item["image_pair"][1, 0, 0] == 100


def test_manipulation_labels_follow_the_folders_order(crops):
    manifest, root = crops
    c23 = manifest[manifest.quality == "c23"]
    ds = TrainFrames(c23, root, seed=0, manipulation=True)
    got = {row.manipulation: int(ds[i]["manipulation"]) for i, row in enumerate(ds.rows.itertuples())}
    assert got == {"real": 0, "DF": 1, "F2F": 2, "NT": 4}
    assert MANIPULATION_IDS == {"real": 0, "DF": 1, "F2F": 2, "FS": 3, "NT": 4, "FSH": 5}
    assert ds[0]["manipulation"].dtype == torch.int64
    plain = TrainFrames(c23, root, seed=0)[0]
    assert set(plain) == {"image", "label"}  # nothing unless asked for
    bad = c23.assign(manipulation="XX")
    with pytest.raises(UserError, match="manipulation"):
        TrainFrames(bad, root, seed=0, manipulation=True)


def test_pipeline_pairs_c23_with_c40_then_raw(crops, monkeypatch):
    from benchmark.pipeline import inputs
    manifest, root = crops
    monkeypatch.setattr(inputs, "faces_dir", lambda dataset: root)
    manifest.to_parquet(root / "manifest.parquet")
    spec = {"dataset": "ff", "quality": "c23", "split": "train"}
    assert set(inputs.pair_manifest(spec).quality) == {"c40"}
    manifest.assign(quality=manifest.quality.replace("c40", "raw")).to_parquet(root / "manifest.parquet")
    assert set(inputs.pair_manifest(spec).quality) == {"raw"}
    manifest[manifest.quality == "c23"].to_parquet(root / "manifest.parquet")
    assert inputs.pair_manifest(spec) is None


def test_preprocessor_makes_the_pair_float_like_the_image():
    data = {"image": torch.full((1, 3, 2, 2), 255, dtype=torch.uint8),
            "image_pair": torch.full((1, 3, 2, 2), 51, dtype=torch.uint8), "label": torch.tensor([1])}
    batch = LevelsPreprocessor()(data, True)["batch"]
    assert batch["image"].dtype == batch["image_pair"].dtype == torch.float32
    assert torch.allclose(batch["image_pair"], torch.full((1, 3, 2, 2), 0.2))


# Methods that need these capabilities, built from params.yaml, on a batch that has them
# (tests/test_methods.py skips a method whose capabilities its batch lacks).
def _capability_methods():
    from benchmark import registry
    registry.load_all()
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    from benchmark.pipeline.specs import resolve_method
    return [(n, resolve_method(params, n)[1]) for n in registry.choices(registry.METHODS)
            if registry.METHODS.get(n).requires & {"quality_pair", "manipulation_label"}]


@pytest.mark.parametrize("name,kwargs", _capability_methods())
def test_capability_methods_train_on_a_full_batch(name, kwargs):
    from benchmark.registry import METHODS
    torch.manual_seed(0)
    model = METHODS.get(name)(**kwargs).train()
    g = torch.Generator().manual_seed(0)
    img = torch.rand(6, 3, 64, 64, generator=g)
    batch = {"image": img, "image_pair": (img * 0.9 + 0.05).clamp(0, 1), "label": torch.arange(6) % 2,
             "manipulation": (torch.arange(6) % 2) * torch.tensor([1, 1, 2, 2, 3, 4])}
    terms = model.loss(model(batch), batch)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in terms.values())
    terms["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss():
        torch.manual_seed(1)
        return model.loss(model(batch), batch)["loss"]
    before = loss().item()
    for _ in range(3):
        opt.zero_grad()
        loss().backward()
        opt.step()
    with torch.no_grad():
        assert loss().item() < before
