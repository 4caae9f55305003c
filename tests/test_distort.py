"""DeeperForensics-1.0 distortions (benchmark/data/distortions.py) against hand computations, and
the distorted-crops stage (benchmark/data/distorted_crops.py) on a tiny SynthFF."""
import json

import cv2
import numpy as np
import pandas as pd
import pytest

from benchmark.data import distortions as D
from benchmark.data import extract as ex
from benchmark.data import faces, store, synthff
from benchmark.data.distorted_crops import distort_faces
from benchmark.errors import UserError
from benchmark.data.jpeg import jpeg, key_rng
from benchmark.registry import DISTORTIONS, choices

SEV = [1, 2, 3, 4, 5]
# DESIGN §9, severity 1 -> 5
TABLE = {"CS": (0.4, 0.3, 0.2, 0.1, 0.0), "CC": (0.85, 0.725, 0.6, 0.475, 0.35),
         "BW": (16, 32, 48, 64, 80), "GNC": (0.001, 0.002, 0.005, 0.01, 0.05),
         "GB": (7, 9, 13, 17, 21), "RESIZE": (2, 3, 4, 5, 6), "VC": (30, 32, 35, 38, 40),
         "JPEGQ": (90, 70, 50, 30, 10)}


def _photo(h=64, w=64, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 3, yy * 3, (xx + yy) * 2], -1) % 256
    return np.clip(base + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)


def test_registry_holds_exactly_the_design_table():
    assert set(choices(DISTORTIONS)) == set(TABLE)
    for code, levels in TABLE.items():
        d = D.get_distortion(code)
        assert tuple(d.param(s) for s in SEV) == levels
    with pytest.raises(UserError):
        D.get_distortion("CS").param(6)


@pytest.mark.parametrize("code", sorted(TABLE))
def test_every_distortion_keeps_shape_changes_the_frame_and_is_seeded(code):
    d = D.get_distortion(code, {"BW": {"min_factor": 1}})
    img = _photo()
    for s in SEV:
        if d.whole_video:
            a, b = d.apply_video([img] * 2, s), d.apply_video([img] * 2, s)
            a, b = a[0], b[0]
        else:
            a, _ = d.apply(img, s, key_rng(0, "k"))
            b, _ = d.apply(img, s, key_rng(0, "k"))
        assert a.dtype == np.uint8 and a.shape == img.shape
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, img), (code, s)


def test_colour_saturation_by_hand():
    # scaling Cb, Cr about 0.5 by p and converting back gives p*RGB + (1-p)*Y per channel
    img = np.array([[[200, 100, 50], [10, 240, 90]]], np.uint8)
    y = img.astype(float) @ [0.299, 0.587, 0.114]
    for s, p in zip(SEV, TABLE["CS"]):
        out, _ = D.get_distortion("CS").apply(img, s)
        np.testing.assert_array_equal(out, np.rint(p * img + (1 - p) * y[..., None]))
    # (200, 100, 50): Y = 59.8 + 58.7 + 5.7 = 124.2; p = 0.4: 80 + 74.52 = 154.52 -> 155, ...
    np.testing.assert_array_equal(D.get_distortion("CS").apply(img, 1)[0][0, 0], [155, 115, 95])
    np.testing.assert_array_equal(D.get_distortion("CS").apply(img, 5)[0][0, 0], [124, 124, 124])


def test_colour_contrast_by_hand():
    img = np.array([[[200, 40, 0]]], np.uint8)
    want = {1: [170, 34, 0], 2: [145, 29, 0], 3: [120, 24, 0], 4: [95, 19, 0], 5: [70, 14, 0]}
    for s in SEV:
        np.testing.assert_array_equal(D.get_distortion("CC").apply(img, s)[0][0, 0], want[s])


def test_block_wise_count_places_and_grey():
    img = np.full((512, 600, 3), 255, np.uint8)  # min(H, W) // 256 = 2
    for s, p in zip(SEV, TABLE["BW"]):
        out, detail = D.get_distortion("BW").apply(img, s, key_rng(0, f"bw{s}"))
        blocks = detail["blocks"]
        assert len(blocks) == 2 * p
        want = img.copy()
        for x, y in blocks:
            assert 0 <= x <= 600 - 8 and 0 <= y <= 512 - 8
            want[y:y + 8, x:x + 8] = 128
        np.testing.assert_array_equal(out, want)
    small = _photo(96, 96)  # DeeperForensics' count is 0 below 256 px; min_factor=1 gives p
    out, detail = D.get_distortion("BW").apply(small, 1, key_rng(0, "x"))
    assert detail["blocks"] == [] and np.array_equal(out, small)
    assert len(D.BlockWise(min_factor=1).apply(small, 3, key_rng(0, "x"))[1]["blocks"]) == 48


def test_gaussian_noise_variance_in_ycbcr():
    d = D.get_distortion("GNC")
    grey = np.full((256, 256, 3), 128, np.uint8)
    for s, v in zip(SEV, TABLE["GNC"]):
        noise = d.noise(grey.shape, s, key_rng(1, "n"))
        assert noise.var() == pytest.approx(v, rel=0.02) and abs(noise.mean()) < 0.01 * np.sqrt(v) * 10
        out, _ = d.apply(grey, s, key_rng(1, "n"))
        # the same draw, added to the hand-converted YCbCr image (grey 128: Y = Cb = Cr = 128/255 + ...)
        ycc = np.array([128 / 255, 0.5, 0.5]) + noise
        r = ycc[..., 0] + 1.402 * (ycc[..., 2] - 0.5)
        g = ycc[..., 0] - 0.344136 * (ycc[..., 1] - 0.5) - 0.714136 * (ycc[..., 2] - 0.5)
        b = ycc[..., 0] + 1.772 * (ycc[..., 1] - 0.5)
        want = np.clip(np.rint(np.stack([r, g, b], -1) * 255), 0, 255)
        assert np.abs(out.astype(int) - want).max() <= 1  # coefficients rounded to 6 digits
        if s <= 4:  # little clipping: the luma variance of the output is v (+ rounding noise)
            luma = out.astype(float) @ [0.299, 0.587, 0.114] / 255
            assert luma.var() == pytest.approx(v, rel=0.06)


def test_gaussian_blur_kernel_by_hand():
    for s, k in zip(SEV, TABLE["GB"]):
        img = np.zeros((64, 64, 3), np.uint8)
        img[32, 32] = 255
        out, _ = D.get_distortion("GB").apply(img, s)
        sigma, c = k / 6, k // 2
        g = np.exp(-((np.arange(k) - c) ** 2) / (2 * sigma ** 2))
        g /= g.sum()
        want = np.zeros((64, 64))
        want[32 - c:32 + c + 1, 32 - c:32 + c + 1] = 255 * np.outer(g, g)
        assert np.abs(out[..., 0].astype(float) - want).max() <= 1.0
        assert out[..., 0][want == 0].max() == 0  # nothing outside the k x k support


def test_resize_scale_factor_by_hand():
    rng = np.random.default_rng(3)
    for s, p in zip(SEV, TABLE["RESIZE"]):
        small = rng.integers(0, 256, (60 // p, 60 // p, 3), dtype=np.uint8)
        img = np.repeat(np.repeat(small, p, 0), p, 1)  # constant on p x p blocks, 60 x 60
        out, _ = D.get_distortion("RESIZE").apply(img, s)
        # bilinear down-scaling by p samples each block inside itself: the blocks come back
        want = cv2.resize(small, (60, 60), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(out, want)


def test_real_jpeg_qualities():
    img = _photo()
    errs = []
    for s, q in zip(SEV, TABLE["JPEGQ"]):
        out, _ = D.get_distortion("JPEGQ").apply(img, s)
        np.testing.assert_array_equal(out, jpeg(img, q))
        errs.append(np.mean((out.astype(float) - img) ** 2))
    assert errs == sorted(errs)


def test_video_compression_changes_frames_deterministically_and_worsens_with_crf():
    frames = [np.roll(_photo(64, 64), 2 * t, axis=1) for t in range(8)]
    d = D.get_distortion("VC")
    mse = {}
    for s in (1, 5):
        a, b = d.apply_video(frames, s), d.apply_video(frames, s)
        assert len(a) == len(frames)
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
        mse[s] = np.mean([(x.astype(float) - f) ** 2 for x, f in zip(a, frames)])
    assert 0 < mse[1] < mse[5]


CFG = dict(seed=0, pairs=dict(train=1, val=1, test=1), frames=6, size=64, crf=dict(c23=23, c40=40))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = synthff.synthesize(CFG, tmp_path_factory.mktemp("raw") / "synthff", workers=1)
    clean = tmp_path_factory.mktemp("faces") / "ff"
    ex.extract(synthff.SynthFF(root), clean, frames_per_video=3, scale=1.3, size=32,
               qualities=["c23"], detector="synthff_boxes", progress=False)
    return root, clean


@pytest.mark.parametrize("code", ["BW", "VC"])
def test_distort_faces_crops_distorted_full_frames_with_the_clean_boxes(tiny, tmp_path, code):
    root, clean = tiny
    out = tmp_path / f"ff@{code}2"
    rep = distort_faces(synthff.SynthFF(root), clean, out, code, 2, seed=7, options={"BW": {"min_factor": 1}},
                        progress=False)
    m, c = pd.read_parquet(out / "manifest.parquet"), pd.read_parquet(clean / "manifest.parquet")
    test = c[(c.split == "test") & (c.quality == "c23")]
    assert len(m) == len(test) == rep["frames_written"] and set(m.perturbation) == {code}
    assert set(m.severity) == {2} and set(m.param) == {TABLE[code][1]}
    row = m.iloc[0]
    video = synthff.SynthFF(root).list_videos(["c23"], ["test"]).set_index("video_id").loc[row.video_id]
    full = synthff.decode(video.path)
    dist = D.get_distortion(code, {"BW": {"min_factor": 1}})
    if dist.whole_video:
        frame = dist.apply_video(full, 2)[row.frame_idx]
    else:
        frame, detail = dist.apply(full[row.frame_idx], 2, key_rng(7, row.rng_key))
        assert json.loads(row.detail) == detail and len(detail["blocks"]) == 32
    want = faces.crop(frame, (row.x0, row.y0, row.x1, row.y1), 32)
    got = store.read_crop(out, row)
    np.testing.assert_array_equal(got, want)


def test_distort_faces_bad_input(tiny, tmp_path):
    root, clean = tiny
    with pytest.raises(UserError, match="no frames of quality"):
        distort_faces(synthff.SynthFF(root), clean, tmp_path / "x", "CS", 1, qualities=["c40"], progress=False)
    with pytest.raises(UserError, match="manifest.parquet not found"):
        distort_faces(synthff.SynthFF(root), tmp_path / "nothing", tmp_path / "y", "CS", 1, progress=False)
    assert not (tmp_path / "x").exists()
