"""k-NN and linear-probe accuracy against brute-force references, limits, and DDP dedup."""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F

from callbacks.probes import KNNAccuracy, LinearProbeAccuracy


def knn_reference(bank, bank_labels, queries, labels, k, temperature, num_classes):
    """One query at a time in float64: sort the bank by cosine similarity, weighted vote."""
    bank, queries = F.normalize(bank.double(), dim=1), F.normalize(queries.double(), dim=1)
    keep = bank_labels >= 0
    bank, bank_labels = bank[keep], bank_labels[keep].tolist()
    correct = total = 0
    for query, label in zip(queries, labels.tolist(), strict=True):
        if label < 0:
            continue
        sims = [float(query @ row) for row in bank]
        nearest = sorted(range(len(sims)), key=lambda j: -sims[j])[:k]
        votes = [0.0] * num_classes
        for j in nearest:
            votes[bank_labels[j]] += math.exp(sims[j] / temperature)
        prediction = max(range(num_classes), key=lambda c: (votes[c], -c))
        correct += prediction == label
        total += 1
    return 100.0 * correct / total


def clustered(n, num_classes, dim, spread, generator, centres):
    labels = torch.randint(0, num_classes, (n,), generator=generator)
    features = centres[labels] + spread * torch.randn(n, dim, generator=generator)
    return features, labels


def shard_like_sampler(rows, world=2):
    """Pad to a multiple of ``world`` with copies of the first rows, then stride by rank."""
    per_rank = -(-len(rows[0]) // world)
    padded = tuple(torch.cat([r, r[: per_rank * world - len(r)]]) for r in rows)
    return [tuple(r[rank::world] for r in padded) for rank in range(world)]


def feed(metric, rows, batch=7):
    for start in range(0, len(rows[0]), batch):
        metric.update(*(r[start : start + batch] for r in rows))


# ------------------------------------------------------------------ k-NN


@pytest.mark.parametrize("block_elements", [3 * 120, 1 << 24])
def test_knn_matches_brute_force(block_elements):
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 8, generator=g)
    bank, bank_labels = clustered(125, 5, 8, 1.5, g, centres)
    bank_labels[:5] = -1  # unlabelled bank rows do not vote
    queries, labels = clustered(60, 5, 8, 1.5, g, centres)
    labels[::11] = -1  # unlabelled queries are not scored
    metric = KNNAccuracy(num_classes=5, k=7, temperature=0.1, block_elements=block_elements)
    metric.set_bank(bank, bank_labels)
    feed(metric, (queries, labels, torch.arange(60)))
    want = knn_reference(bank, bank_labels, queries, labels, 7, 0.1, 5)
    assert 0 < want < 100
    assert metric.compute().item() == pytest.approx(want, abs=1e-9)


def test_knn_votes_are_weighted_by_similarity():
    """One very close neighbour of class 0 outvotes two farther ones of class 1 at T = 0.07
    (exp(1/T) > 2 exp(0.5/T)); at T = 10 the vote is nearly a majority vote and class 1 wins."""

    def at(degrees):
        rad = math.radians(degrees)
        return [math.cos(rad), math.sin(rad)]

    bank = torch.tensor([at(0), at(60), at(-60), at(180)])
    bank_labels = torch.tensor([0, 1, 1, 0])
    predictions = {}
    for temperature in (0.07, 10.0):
        metric = KNNAccuracy(num_classes=2, k=3, temperature=temperature)
        metric.set_bank(bank, bank_labels)
        metric.update(torch.tensor([at(0)]), torch.tensor([0]), torch.tensor([0]))
        predictions[temperature] = metric.compute().item()
    assert predictions == {0.07: 100.0, 10.0: 0.0}


def test_knn_two_ranks_with_padding_equal_one_process():
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(4, 6, generator=g)
    bank, bank_labels = clustered(80, 4, 6, 1.2, g, centres)
    queries, labels = clustered(41, 4, 6, 1.2, g, centres)
    index = torch.randperm(41, generator=g) * 5 + 2
    rows = (queries, labels, index)

    single = KNNAccuracy(num_classes=4, k=5)
    single.set_bank(bank, bank_labels)
    feed(single, rows)
    ranks = []
    for shard in shard_like_sampler(rows):  # 21 rows each, one a padding duplicate
        metric = KNNAccuracy(num_classes=4, k=5)
        # each rank gathers the same bank, padded too: its index drops the duplicates
        bank_shards = shard_like_sampler((bank, bank_labels, torch.arange(80)), world=3)
        metric.set_bank(*(torch.cat(parts) for parts in zip(*bank_shards, strict=True)))
        feed(metric, shard, batch=4)
        ranks.append(metric)
    ranks[0].merge_state(ranks[1])
    assert ranks[0].compute().item() == single.compute().item()
    assert 0 < single.compute().item() < 100


def test_knn_limits():
    bank = torch.eye(3)
    metric = KNNAccuracy(num_classes=3, k=50)  # k above the bank size uses the whole bank
    metric.set_bank(bank, torch.arange(3))
    assert math.isnan(metric.compute().item())  # no query yet
    metric.update(bank + 0.1, torch.tensor([0, 1, -1]), torch.arange(3))
    assert metric.compute().item() == 100.0
    with pytest.raises(ValueError):
        metric.update(bank, torch.tensor([0, 1, 3]), torch.arange(3))
    with pytest.raises(RuntimeError):
        KNNAccuracy(num_classes=3).compute()


# ------------------------------------------------------------------ linear probe


def test_linear_probe_separable_data_reaches_100():
    g = torch.Generator().manual_seed(2)
    centres = 4.0 * torch.randn(10, 16, generator=g)
    bank, bank_labels = clustered(500, 10, 16, 0.5, g, centres)
    queries, labels = clustered(200, 10, 16, 0.5, g, centres)
    metric = LinearProbeAccuracy(num_classes=10)
    metric.set_bank(bank, bank_labels)
    feed(metric, (queries, labels, torch.arange(200)), batch=64)
    assert metric.compute().item() == 100.0


def test_linear_probe_random_labels_give_chance_on_held_out_queries():
    g = torch.Generator().manual_seed(3)
    metric = LinearProbeAccuracy(num_classes=4)
    metric.set_bank(torch.randn(2000, 16, generator=g), torch.randint(0, 4, (2000,), generator=g))
    queries, labels = torch.randn(4000, 16, generator=g), torch.randint(0, 4, (4000,), generator=g)
    metric.update(queries, labels, torch.arange(4000))
    assert metric.compute().item() == pytest.approx(25.0, abs=3.0)  # 3 % is ~4 std


def test_linear_probe_fit_is_the_optimum_of_the_regularised_objective():
    """First-order conditions in float64 at the returned classifier: a fit without the bias,
    with the wrong decay or without standardisation would leave a non-zero gradient."""
    g = torch.Generator().manual_seed(4)
    centres = torch.randn(6, 12, generator=g)
    bank, labels = clustered(600, 6, 12, 1.0, g, centres)
    bank = bank * torch.linspace(0.1, 5.0, 12) + 3.0
    metric = LinearProbeAccuracy(num_classes=6, weight_decay=1e-2, steps=200)
    metric.set_bank(bank, labels)
    mean, std, weight, bias = metric._classifier
    torch.testing.assert_close(mean, bank.mean(dim=0))
    torch.testing.assert_close(std, bank.std(dim=0, correction=0))
    x = ((bank - mean) / std).double()
    weight, bias = weight.double().requires_grad_(), bias.double().requires_grad_()
    loss = F.cross_entropy(x @ weight.T + bias, labels) + 0.5e-2 * weight.pow(2).sum()
    loss.backward()
    assert weight.grad.abs().max() < 1e-4 and bias.grad.abs().max() < 1e-4
    assert bias.abs().max() > 1e-2  # the bias is fitted, not stuck at 0


def test_linear_probe_is_invariant_to_per_dimension_affine_maps():
    """Standardisation with the bank's statistics removes any per-dimension scale and shift,
    so the accuracy on fragile (random-label) data does not move."""
    g = torch.Generator().manual_seed(5)
    bank, bank_labels = torch.randn(800, 10, generator=g), torch.randint(0, 3, (800,), generator=g)
    queries, labels = torch.randn(300, 10, generator=g), torch.randint(0, 3, (300,), generator=g)
    scale, shift = torch.logspace(-3, 3, 10), torch.linspace(-50, 50, 10)
    results = []
    for a, b in ((1.0, 0.0), (scale, shift)):
        metric = LinearProbeAccuracy(num_classes=3)
        metric.set_bank(bank * a + b, bank_labels)
        metric.update(queries * a + b, labels, torch.arange(300))
        results.append(metric.compute().item())
    assert results[0] == pytest.approx(results[1], abs=100.0 / 300 + 1e-9)  # one query at most


def test_linear_probe_two_ranks_with_padding_equal_one_process_and_inference_mode():
    g = torch.Generator().manual_seed(6)
    centres = torch.randn(5, 8, generator=g)
    bank, bank_labels = clustered(300, 5, 8, 1.5, g, centres)
    bank_labels[::17] = -1
    queries, labels = clustered(51, 5, 8, 1.5, g, centres)
    labels[::9] = -1
    rows = (queries, labels, torch.randperm(51, generator=g) + 100)

    single = LinearProbeAccuracy(num_classes=5)
    single.set_bank(bank, bank_labels)
    feed(single, rows)
    ranks = []
    for shard in shard_like_sampler(rows):
        metric = LinearProbeAccuracy(num_classes=5)
        padded = shard_like_sampler((bank, bank_labels, torch.arange(300)), world=7)
        with torch.inference_mode():  # Lightning's validation loop
            metric.set_bank(*(torch.cat(parts) for parts in zip(*padded, strict=True)))
            feed(metric, shard, batch=5)
        ranks.append(metric)
    ranks[0].merge_state(ranks[1])
    want = single.compute().item()
    assert ranks[0].compute().item() == want
    assert 20 < want < 100


def test_linear_probe_fits_a_10k_bank_in_under_2_seconds():
    g = torch.Generator().manual_seed(7)
    centres = torch.randn(36, 128, generator=g)
    bank, labels = clustered(10_000, 36, 128, 4.0, g, centres)
    metric = LinearProbeAccuracy(num_classes=36)
    threads = torch.get_num_threads()
    start = time.process_time()  # the fit runs on one thread: CPU time ~ wall time when idle,
    metric.set_bank(F.normalize(bank, dim=1), labels)  # but not inflated by other users' load
    assert time.process_time() - start < 2.0
    assert torch.get_num_threads() == threads  # the one-thread fit restores the setting
