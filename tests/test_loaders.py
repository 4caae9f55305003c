"""The training sampler (train.sampler): balanced real/fake pairs, seeded by (seed, epoch)."""
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from benchmark.engine.loaders import BalancedSampler, train_loader
from benchmark.errors import UserError

LABELS = [0, 0, 1, 1, 1, 1, 1]  # 2 reals, 5 fakes


def test_every_fake_once_each_with_a_random_real():
    s = BalancedSampler(LABELS, seed=3)
    order = list(s)
    assert len(s) == len(order) == 10  # 2 x the larger class
    assert Counter(order[i] for i in range(10) if LABELS[order[i]] == 1) == {i: 1 for i in range(2, 7)}
    assert all(sorted(LABELS[j] for j in order[i:i + 2]) == [0, 1] for i in range(0, 10, 2))  # pairs


def test_reals_are_the_larger_class_the_other_way_round():
    s = BalancedSampler([0, 0, 0, 1], seed=0)
    order = list(s)
    assert len(order) == 6 and sorted(i for i in order if i < 3) == [0, 1, 2] and order.count(3) == 3


def test_seeded_by_seed_and_epoch_only():
    a, b = BalancedSampler(LABELS, seed=1), BalancedSampler(LABELS, seed=1)
    assert list(a) == list(b)
    a.set_epoch(4)
    first = list(a)
    assert first != list(b) and first == list(a)  # a resumed run at epoch 4 draws the same
    b.set_epoch(4)
    assert list(b) == first
    assert list(BalancedSampler(LABELS, seed=2)) != list(BalancedSampler(LABELS, seed=1))


def test_batches_are_half_real():
    class Frames:
        rows = pd.DataFrame({"label": [0] * 10 + [1] * 40})

        def __len__(self):
            return 50

        def __getitem__(self, i):
            return {"label": int(self.rows["label"][i])}

    loader = train_loader(Frames(), 8, {"sampler": "balanced"}, seed=0)
    sizes = [(int(b["label"].sum()), len(b["label"])) for b in loader]
    assert sum(n for _, n in sizes) == 80 and all(f == n // 2 for f, n in sizes)


def test_one_class_or_an_unknown_sampler_is_refused():
    with pytest.raises(UserError, match="needs reals and fakes"):
        BalancedSampler(np.ones(4), seed=0)
    with pytest.raises(UserError, match="train.sampler='nope' is unknown; choose one of: uniform, balanced"):
        train_loader([], 2, {"sampler": "nope"}, seed=0)


def test_ranks_share_the_pairs_of_one_epoch():
    """Under a launcher rank r takes pairs r, r + W, ... of the same draw (5 pairs, W = 2: one
    pair padded from the start), so every rank's batches stay half real."""
    whole = list(BalancedSampler(LABELS, seed=5))
    pairs = [tuple(whole[i:i + 2]) for i in range(0, len(whole), 2)]
    shards = [list(BalancedSampler(LABELS, seed=5, rank=r, world_size=2)) for r in (0, 1)]
    assert [len(s) for s in shards] == [6, 6]
    assert [tuple(shards[0][i:i + 2]) for i in range(0, 6, 2)] == pairs[0::2]
    assert [tuple(shards[1][i:i + 2]) for i in range(0, 6, 2)] == pairs[1::2] + pairs[:1]
