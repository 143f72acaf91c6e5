"""The ``effective_rank`` evaluator (callbacks/effective_rank.py): Roy & Vetterli's effective
rank against numpy, exact values on matrices whose answer is known, de-duplication by item id,
order independence, the cap, two ranks' merged states, and when it is on by default."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from callbacks.effective_rank import EffectiveRank, EffectiveRankEvaluator, effective_rank
from tests.test_probes import feed, shard_like_sampler


def numpy_effective_rank(x: np.ndarray) -> float:
    """exp of the entropy of the L1-normalised singular values of the centred rows."""
    sigma = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    p = sigma / sigma.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def test_matches_numpy_on_a_random_matrix():
    x = np.random.default_rng(0).normal(size=(40, 7)) * np.arange(1, 8)  # unequal spreads
    got = float(effective_rank(torch.from_numpy(x)))
    assert got == pytest.approx(numpy_effective_rank(x), rel=1e-12)
    assert 1.0 < got < 7.0


@pytest.mark.parametrize("r", [1, 3, 5])
def test_r_equal_directions_give_exactly_r_and_the_mean_is_ignored(r):
    """Items +-e_k (k < r) around an offset: r equal singular values after centring; without
    centring the offset would add a direction."""
    dims = torch.eye(8, dtype=torch.float64)[:r]
    x = torch.cat([dims, -dims]) + 5.0 * torch.eye(8, dtype=torch.float64)[7]
    assert float(effective_rank(x)) == pytest.approx(r, rel=1e-12)


def test_low_rank_data_has_at_most_its_rank():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 3, generator=g, dtype=torch.float64) @ torch.randn(
        3, 32, generator=g, dtype=torch.float64
    )
    assert 1.0 < float(effective_rank(x)) <= 3.0 + 1e-9
    assert torch.isnan(effective_rank(torch.ones(4, 3)))  # no spread


def test_metric_deduplicates_ignores_order_and_caps():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(30, 6, generator=g)
    ids = torch.arange(30)
    metric = EffectiveRank()
    metric.update(x[20:], ids[20:])
    metric.update(
        torch.cat([x[:20], x[3:4] * 0]), torch.cat([ids[:20], ids[3:4]])
    )  # a padding copy
    torch.testing.assert_close(metric.compute(), effective_rank(x).float())
    capped = EffectiveRank(max_items=10)
    capped.update(x, ids)
    pick = torch.linspace(0, 29, 10).round().long()
    torch.testing.assert_close(capped.compute(), effective_rank(x[pick]).float())


def test_two_ranks_states_merged_give_the_one_process_value():
    """Interleaved, padded shards (DistributedSampler), each fed in batches, merged as the
    DDP sync's concatenation of states: the one-process value."""
    x = torch.randn(21, 5, generator=torch.Generator().manual_seed(3))
    ranks = []
    for shard in shard_like_sampler((x, torch.arange(21))):  # 11 rows each, one a duplicate
        metric = EffectiveRank()
        feed(metric, shard, batch=4)
        ranks.append(metric)
    ranks[0].merge_state(ranks[1])
    assert float(ranks[0].compute()) == pytest.approx(float(effective_rank(x)), rel=1e-6)


def test_on_by_default_for_one_encoder_with_labels_only():
    one = SimpleNamespace(modalities=("image",), device=torch.device("cpu"))
    two = SimpleNamespace(modalities=("image", "text"), device=torch.device("cpu"))
    labelled, unlabelled = SimpleNamespace(labels={"shape": 4}), SimpleNamespace(labels={})
    assert EffectiveRankEvaluator.applies(one, labelled)
    assert not EffectiveRankEvaluator.applies(two, labelled)
    assert not EffectiveRankEvaluator.applies(one, unlabelled)
    evaluator = EffectiveRankEvaluator(one, labelled, {"max_items": 8})
    assert evaluator.compute() == {}
    x = torch.nn.functional.normalize(
        torch.randn(12, 4, generator=torch.Generator().manual_seed(4)), dim=1
    )
    evaluator.update({"embeddings": {"image": x}, "item_id": torch.arange(12)}, {})
    pick = torch.linspace(0, 11, 8).round().long()
    torch.testing.assert_close(
        evaluator.compute()["effective_rank"], effective_rank(x[pick]).float()
    )
    with pytest.raises(ValueError, match="modality 'audio'"):
        EffectiveRankEvaluator(one, labelled, {"modality": "audio"})
