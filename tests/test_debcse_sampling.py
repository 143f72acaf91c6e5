"""DebCSE's inverse-propensity-weighted pair sampling (modules/debcse_sampling.py): word overlap
and candidate mining against brute-force loops over Python sets, propensities against counting,
and the sampler's frequencies against 1 / propensity (chi-squared)."""

from __future__ import annotations

import pytest
import scipy.stats
import torch

from modules.debcse_sampling import (
    bag_of_words,
    draw_inverse_propensity,
    jaccard,
    joint_bins,
    mine_candidates,
    pair_features,
    propensity,
)

IDS = torch.tensor([[5, 6, 7, 0], [5, 6, 8, 9], [7, 7, 3, 0], [1, 2, 4, 0], [5, 9, 0, 0]])
MASK = IDS != 0


def word_sets() -> list[set[int]]:
    return [
        {int(t) for t, m in zip(row, mask, strict=True) if m}
        for row, mask in zip(IDS, MASK, strict=True)
    ]


def slow_jaccard(a: set[int], b: set[int]) -> float:
    return len(a & b) / len(a | b)


def test_jaccard_of_bags_equals_the_set_definition() -> None:
    bags, sets = bag_of_words(IDS, MASK), word_sets()
    got = jaccard(bags, bags)
    for i, a in enumerate(sets):
        for j, b in enumerate(sets):
            assert got[i, j].item() == pytest.approx(slow_jaccard(a, b))


def test_mined_candidates_equal_brute_force() -> None:
    generator = torch.Generator().manual_seed(0)
    n, k = 12, 3
    ids = torch.randint(1, 9, (n, 5), generator=generator)
    mask = torch.ones_like(ids, dtype=torch.bool)
    emb = torch.nn.functional.normalize(torch.randn(n, 4, generator=generator), dim=1)
    bags = bag_of_words(ids, mask)
    positives, negatives = mine_candidates(emb, bags, k, chunk=5)
    sets = [set(row.tolist()) for row in ids]
    for i in range(n):
        cos = sorted((j for j in range(n) if j != i), key=lambda j: -float(emb[i] @ emb[j]))
        assert set(positives[i].tolist()) == set(cos[:k])
        rest = [j for j in range(n) if j != i and j not in cos[:k]]
        overlaps = sorted(slow_jaccard(sets[i], sets[j]) for j in rest)[::-1]
        got = sorted(slow_jaccard(sets[i], sets[j]) for j in negatives[i].tolist())[::-1]
        assert got == pytest.approx(overlaps[:k])  # ties may pick either sentence
        assert i not in negatives[i].tolist() and not set(negatives[i].tolist()) & set(cos[:k])


def test_a_pool_too_small_for_k_is_refused() -> None:
    with pytest.raises(ValueError, match="k = 3"):
        mine_candidates(torch.eye(5), torch.eye(5), 3)


def test_propensity_is_the_share_of_candidates_in_the_bin() -> None:
    bins = torch.tensor([[0, 0, 1], [2, 0, 1]])
    expected = torch.tensor([[3, 3, 2], [1, 3, 2]], dtype=torch.float64) / 6
    torch.testing.assert_close(propensity(bins), expected)


def test_pair_features_are_overlap_and_relative_length_difference() -> None:
    bags, sets = bag_of_words(IDS, MASK), word_sets()
    lengths = MASK.sum(1)
    features = pair_features(torch.tensor([0, 3]), torch.tensor([[1, 4], [2, 0]]), bags, lengths)
    assert features[0, 0, 0].item() == pytest.approx(slow_jaccard(sets[0], sets[1]))
    assert features[0, 0, 1].item() == pytest.approx(1 / 4)  # lengths 3 and 4
    assert features[1, 1, 1].item() == pytest.approx(0.0)  # lengths 3 and 3
    bins = joint_bins(features, 2)
    assert bins.shape == (2, 2) and bins.min() >= 0 and bins.max() < 4


def test_draw_frequencies_are_inverse_to_the_propensity() -> None:
    """chi-squared: one anchor, four candidates with propensities 1/2, 1/4, 1/8, 1/8, drawn at
    2 000 steps, must be drawn in proportions 1 : 2 : 4 : 4."""
    candidates = torch.tensor([[10, 11, 12, 13]])
    e = torch.tensor([[0.5, 0.25, 0.125, 0.125]], dtype=torch.float64)
    draws = [
        int(draw_inverse_propensity(candidates, e, torch.tensor([0]), step, 3, 0))
        for step in range(2000)
    ]
    counts = [draws.count(c) for c in (10, 11, 12, 13)]
    expected = [2000 * w / 11 for w in (1, 2, 4, 4)]
    assert scipy.stats.chisquare(counts, expected).pvalue > 1e-3
    # and a uniform sampler is rejected by the same test
    assert scipy.stats.chisquare([500] * 4, expected).pvalue < 1e-3


def test_draws_depend_on_sample_step_and_seed_not_on_the_batch_split() -> None:
    generator = torch.Generator().manual_seed(1)
    candidates = torch.randint(0, 50, (8, 5), generator=generator)
    e = torch.rand(8, 5, generator=generator, dtype=torch.float64) + 0.1
    index = torch.arange(8)
    whole = draw_inverse_propensity(candidates, e, index, 4, 0, 1)
    halves = torch.cat(
        [draw_inverse_propensity(candidates, e, part, 4, 0, 1) for part in index.chunk(2)]
    )
    torch.testing.assert_close(whole, halves)
    other_steps = torch.stack(
        [draw_inverse_propensity(candidates, e, index, s, 0, 1) for s in range(5, 10)]
    )
    assert (other_steps != whole).any()
