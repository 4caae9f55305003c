"""The evaluation's indicator-score cache: computed once, reused by a second method, keyed on
everything the scores depend on."""
import numpy as np
import pandas as pd
import pytest
import torch

from benchmark.data import store
from benchmark.evaluation import indicator_cache
from benchmark.evaluation.conditions import get_conditions
from benchmark.evaluation.indicator_cache import IndicatorCache
from benchmark.evaluation.score import score
from benchmark.indicators import FallbackIndicator, IndicatorLevels


class Counting(FallbackIndicator):
    """The fallback backend, counting the images it scores."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.scored = 0

    def score(self, images):
        self.scored += len(images)
        return super().score(images)


class Constant(torch.nn.Module):
    requires = ()

    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, batch):
        return {"logit": torch.full((len(batch["image"]),), float(self.value))}


@pytest.fixture()
def crops(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for v in range(3):
        imgs = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(2)]
        locs = store.write_shard(tmp_path, store.shard_path("c23", f"real/{v:03d}"),
                                 [(store.member_name(f), img) for f, img in enumerate(imgs)])
        rows += [dict(video_id=f"real/{v:03d}", frame_idx=f, face=0, label=v % 2, manipulation="real",
                      quality="c23", split="test", **loc) for f, loc in enumerate(locs)]
    return pd.DataFrame(rows), tmp_path


def _levels(backend):
    return IndicatorLevels.fit(np.linspace(0, 1, 10), np.linspace(0, 1, 10), "quantile", 3, backend)


def test_the_second_method_reuses_the_first_ones_scores(crops, tmp_path):
    manifest, faces = crops
    backend = Counting()
    ind, cond, cache = _levels(backend), get_conditions("random_jpeg"), IndicatorCache(tmp_path / "cache")
    a = score(Constant(0.0), manifest, faces, cond, ind, 8, 0, cache=cache)
    assert backend.scored == 6 * 4 and (cache.hits, cache.misses) == (0, 24)
    b = score(Constant(1.0), manifest, faces, cond, ind, 8, 0, cache=cache)
    assert backend.scored == 24 and (cache.hits, cache.misses) == (24, 24) and cache.hit_rate == 0.5
    plain = score(Constant(1.0), manifest, faces, cond, ind, 8, 0)        # no cache: recomputed
    pd.testing.assert_frame_equal(b, plain)                               # a hit gives the same floats
    cols = ["vqi", "fii", "vqi_level", "fii_level", "jpeg_quality"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert not a["score"].equals(b["score"])


def test_the_key_changes_with_backend_condition_seed_and_crops(crops):
    manifest, _ = crops
    cond = get_conditions("random_jpeg")
    base = indicator_cache.key(_levels(FallbackIndicator()), cond, 0, manifest)
    assert base == indicator_cache.key(_levels(FallbackIndicator()), cond, 0, manifest.copy())
    changed = [
        indicator_cache.key(_levels(FallbackIndicator(reason="other")), cond, 0, manifest),   # backend description
        indicator_cache.key(_levels(FallbackIndicator()), get_conditions("random_jpeg", ranges=((50, 60),)), 0, manifest),
        indicator_cache.key(_levels(FallbackIndicator()), get_conditions("jpeg_quality"), 0, manifest),
        indicator_cache.key(_levels(FallbackIndicator()), cond, 1, manifest),                 # evaluation seed
        indicator_cache.key(_levels(FallbackIndicator()), cond, 0, manifest.assign(crc32=manifest.crc32 + 1)),
        indicator_cache.key(_levels(FallbackIndicator()), cond, 0, manifest.iloc[::-1]),       # another order
    ]
    assert base not in changed and len(set(changed)) == len(changed)


def test_a_damaged_entry_is_recomputed(crops, tmp_path):
    manifest, faces = crops
    backend, cache = Counting(), IndicatorCache(tmp_path / "cache")
    ind, cond = _levels(backend), get_conditions("none")
    first = score(Constant(0.0), manifest, faces, cond, ind, 8, 0, cache=cache)
    [entry] = (tmp_path / "cache").glob("*.parquet")
    entry.write_bytes(b"not parquet")
    again = score(Constant(0.0), manifest, faces, cond, ind, 8, 0, cache=cache)
    assert backend.scored == 12 and cache.hits == 0
    pd.testing.assert_frame_equal(first, again)
