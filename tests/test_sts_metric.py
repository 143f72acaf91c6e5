"""STS Spearman against a hand-computed example with ties and numpy argsort-based ranks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from callbacks.sts import STSSpearman, average_ranks, spearman


def numpy_average_ranks(x: np.ndarray) -> np.ndarray:
    """Ordinal ranks from argsort, then every group of equal values gets its mean rank."""
    ranks = np.empty(len(x))
    ranks[np.argsort(x, kind="stable")] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        ranks[x == value] = ranks[x == value].mean()
    return ranks


def pairs_with_cosines(cosines):
    """Unit vectors a = e1 and b at angle arccos(c) from it: cosine(a, b) = c."""
    c = torch.tensor(cosines, dtype=torch.float64)
    a = torch.stack([torch.ones_like(c), torch.zeros_like(c)], dim=1)
    b = torch.stack([c, (1 - c**2).sqrt()], dim=1)
    return a, b


def test_hand_computed_example_with_ties():
    """cosines 0.1 0.4 0.4 0.9 0.2 -> ranks 1 3.5 3.5 5 2; gold 1 3 2 5 2 -> ranks 1 4 2.5 5 2.5;
    centred ranks (-2 .5 .5 2 -1), (-2 1 -.5 2 -.5): rho = 8.75 / sqrt(9.5 * 9.5) = 35 / 38."""
    a, b = pairs_with_cosines([0.1, 0.4, 0.4, 0.9, 0.2])
    gold = torch.tensor([1.0, 3.0, 2.0, 5.0, 2.0])
    metric = STSSpearman()
    metric.update(a[:3], b[:3], gold[:3], torch.arange(3))
    metric.update(a[3:], b[3:], gold[3:], torch.arange(3, 5))
    assert metric.compute().item() == pytest.approx(100 * 35 / 38, abs=1e-9)
    assert average_ranks(gold).tolist() == [1.0, 4.0, 2.5, 5.0, 2.5]


def test_ranks_and_rho_match_numpy_argsort_reference():
    g = torch.Generator().manual_seed(0)
    for n, values in ((50, 6), (200, 26), (31, 1000)):
        x = torch.randint(0, values, (n,), generator=g).double() / 5  # many ties
        y = x + torch.randn(n, generator=g, dtype=torch.float64)
        want_x = numpy_average_ranks(x.numpy())
        np.testing.assert_array_equal(average_ranks(x).numpy(), want_x)
        want_rho = np.corrcoef(want_x, numpy_average_ranks(y.numpy()))[0, 1]
        assert spearman(x, y).item() == pytest.approx(want_rho, abs=1e-12)


def test_metric_matches_reference_with_padding_duplicates_across_two_ranks():
    g = torch.Generator().manual_seed(1)
    n, dim = 41, 8
    a = torch.randn(n, dim, generator=g)
    b = a + torch.randn(n, dim, generator=g)
    b[5], a[5] = b[4], a[4]  # an exact similarity tie
    gold = torch.randint(0, 26, (n,), generator=g).float() / 5  # STS-B style 0-5 in 0.2 steps
    index = torch.randperm(n, generator=g) + 7
    cosine = F.cosine_similarity(a.double(), b.double(), dim=1).numpy()
    want = 100 * np.corrcoef(numpy_average_ranks(cosine), numpy_average_ranks(gold.numpy()))[0, 1]

    single = STSSpearman()
    single.update(a, b, gold, index)
    ranks = []
    padded = [torch.cat([t, t[:1]]) for t in (a, b, gold, index)]  # 42 rows, 21 per rank
    for rank in range(2):
        metric = STSSpearman()
        shard = [t[rank::2] for t in padded]
        for start in range(0, 21, 8):
            metric.update(*(t[start : start + 8] for t in shard))
        ranks.append(metric)
    ranks[0].merge_state(ranks[1])
    assert single.compute().item() == pytest.approx(want, abs=1e-4)
    assert ranks[0].compute().item() == pytest.approx(want, abs=1e-4)


def test_limits_and_invariances():
    a, b = pairs_with_cosines([-0.5, 0.0, 0.3, 0.7, 0.95])
    gold = torch.tensor([0.0, 1.0, 2.5, 4.0, 4.5])
    results = []
    for scores, scale in ((gold, 1.0), (gold.exp(), 3.0), (-gold, 1.0)):
        metric = STSSpearman()
        metric.update(a * scale, b.float(), scores, torch.arange(5))  # mixed float64/float32
        results.append(metric.compute().item())
    assert results == pytest.approx([100.0, 100.0, -100.0])
    constant = STSSpearman()
    constant.update(a, b, torch.ones(5), torch.arange(5))
    assert math.isnan(constant.compute().item())
    one = STSSpearman()
    one.update(a[:1], b[:1], gold[:1], torch.zeros(1))
    one.update(a[1:2], b[1:2], gold[1:2], torch.zeros(1))  # the same pair again
    assert math.isnan(one.compute().item())
