"""JPEG round trips, the release's random JPEG test conditions and training augmentation."""
import benchmark  # noqa: F401

import cv2
import numpy as np
import pytest
import torch
from matplotlib import cbook

from benchmark.errors import UserError
from benchmark.data.jpeg import JPEG_RANGES, RandomJPEG, jpeg, random_jpeg_conditions
from benchmark.evaluation.conditions import get_conditions


@pytest.fixture(scope="module")
def photo():
    bgr = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (128, 150), interpolation=cv2.INTER_AREA)


def psnr(a, b):
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


def test_jpeg_round_trip_changes_image_and_lower_quality_is_worse(photo):
    out = {q: jpeg(photo, q) for q in (95, 50, 10)}
    for q, im in out.items():
        assert im.shape == photo.shape and im.dtype == np.uint8
        assert not np.array_equal(im, photo)
    assert psnr(photo, out[95]) > psnr(photo, out[50]) > psnr(photo, out[10])


def test_jpeg_keeps_rgb_order_and_accepts_tensors():
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 200
    out = jpeg(red, 90)
    assert out[..., 0].mean() > 190 and out[..., 2].mean() < 10  # not swapped to BGR
    t = torch.from_numpy(red).permute(2, 0, 1)
    assert torch.equal(jpeg(t, 90), torch.from_numpy(out).permute(2, 0, 1))


def test_random_jpeg_conditions_deterministic_in_range_order_free():
    keys = [f"DF/{i:03d}_{i + 1:03d}/c23/{f}" for i in range(20) for f in range(4)]
    first = {k: random_jpeg_conditions(0, k) for k in keys}
    again = {k: random_jpeg_conditions(0, k) for k in reversed(keys)}
    assert first == again
    for qs in first.values():
        assert len(qs) == 4 and qs[0] == 100
        for q, (lo, hi) in zip(qs[1:], JPEG_RANGES):
            assert lo <= q <= hi and isinstance(q, int)
    assert len({tuple(q) for q in first.values()}) > 1          # keys differ -> draws differ
    assert any(random_jpeg_conditions(1, k) != first[k] for k in keys)  # seed matters


def test_random_jpeg_condition_set(photo):
    cs = get_conditions("random_jpeg")
    assert cs.n_conditions == 4 and list(cs.severities) == [0, 1, 2, 3]
    key = "real/000/c40/7"
    qs = random_jpeg_conditions(3, key)
    for i in range(4):
        img, q = cs.apply(photo, i, 3, key)
        assert q == qs[i] and np.array_equal(img, jpeg(photo, q))
    with pytest.raises(ValueError):
        cs.apply(photo, 4, 3, key)
    assert get_conditions("none").apply(photo, 0, 0, key)[0] is photo
    with pytest.raises(UserError):
        get_conditions("no_such_set")


def test_random_jpeg_augmentation_statistics(photo):
    aug = RandomJPEG()
    assert aug.keep_prob == pytest.approx(0.25)
    rng = np.random.default_rng(0)
    draws = [aug.sample(rng) for _ in range(4000)]
    kept = sum(q is None for q in draws)
    bins = [sum(q is not None and lo <= q <= hi for q in draws) for lo, hi in JPEG_RANGES]
    assert kept + sum(bins) == len(draws)
    for count in [kept] + bins:
        assert 900 < count < 1100  # 1000 expected each
    assert {q for q in draws if q is not None and q <= 12} == set(range(8, 13))
    # identical generator state -> identical output; "keep" returns the image itself
    a = RandomJPEG()(photo, np.random.default_rng(5))
    b = RandomJPEG()(photo, np.random.default_rng(5))
    assert np.array_equal(a, b)
    assert RandomJPEG(keep_prob=1.0)(photo, rng) is photo
    assert all(RandomJPEG(keep_prob=0.0).sample(rng) is not None for _ in range(100))
