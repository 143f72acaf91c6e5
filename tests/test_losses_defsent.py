"""DefSent+'s entry table and loss (modules/losses/defsent.py): per-entry averages against a
loop, the isotropic spaces (covariance = identity, mean 0: methods/part2.md Sec. 46's unit test
on 10 000 vectors), FastICA recovering independent sources that a random matrix mixed, the
entry loss against a row-by-row log-softmax, its minimum at the definition's own entry and its
frozen table."""

from __future__ import annotations

import math

import pytest
import torch

from modules.losses.defsent import (
    entry_embeddings,
    entry_loss,
    fast_ica_rotation,
    isotropic_entries,
    standardize,
    whiten,
)

F64 = torch.float64


def covariance(x):
    centred = x - x.mean(0)
    return centred.T @ centred / x.shape[0]


def slow_entry_loss(sentences, entries, targets):
    total = 0.0
    for s, y in zip(sentences, targets.tolist(), strict=True):
        logits = [float(s @ e) for e in entries]
        top = max(logits)
        log_z = top + math.log(sum(math.exp(v - top) for v in logits))
        total += log_z - logits[y]
    return total / len(targets)


def test_entry_embeddings_average_each_entrys_definitions():
    g = torch.Generator().manual_seed(0)
    definitions = torch.randn(9, 4, generator=g, dtype=F64)
    ids = torch.tensor([2, 0, 1, 2, 2, 0, 1, 1, 3])
    table = entry_embeddings(definitions, ids, 4)
    for k in range(4):
        rows = [definitions[i] for i in range(9) if ids[i] == k]
        torch.testing.assert_close(table[k], sum(rows) / len(rows))
    with pytest.raises(ValueError, match="entry 4 has no definition"):
        entry_embeddings(definitions, ids, 5)


def test_whitened_and_ica_spaces_are_isotropic():
    g = torch.Generator().manual_seed(1)
    mixing = torch.randn(8, 8, generator=g, dtype=F64)
    x = torch.randn(10_000, 8, generator=g, dtype=F64) @ mixing + 3.0  # correlated, off-centre
    white = whiten(standardize(x))
    assert white.mean(0).abs().max() < 1e-10
    cov = covariance(white)
    assert (cov - torch.eye(8, dtype=F64)).abs().max() < 1e-3
    table = isotropic_entries(
        x[:2000], "ica", scale=100.0, generator=torch.Generator().manual_seed(0), iterations=20
    )
    assert (covariance(table) / 100.0**2 - torch.eye(8, dtype=F64)).abs().max() < 1e-3
    torch.testing.assert_close(isotropic_entries(x, "raw"), x)
    few = isotropic_entries(x[:5], "whitened", scale=1.0)  # 5 entries span 4 of 8 dimensions
    assert few.shape == (5, 8) and few[:, 4:].abs().max() == 0
    torch.testing.assert_close(covariance(few[:, :4]), torch.eye(4, dtype=F64))


def test_standardize_gives_zero_mean_unit_std_columns():
    x = torch.randn(500, 3, dtype=F64) * torch.tensor([1.0, 5.0, 0.1], dtype=F64) + 7.0
    z = standardize(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(3, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(z.pow(2).mean(0), torch.ones(3, dtype=F64))


def test_fast_ica_recovers_independent_sources():
    g = torch.Generator().manual_seed(2)
    sources = torch.rand(5000, 4, generator=g, dtype=F64) * 2 - 1  # uniform: non-Gaussian
    mixed = sources @ torch.randn(4, 4, generator=g, dtype=F64)
    white = whiten(mixed)
    w = fast_ica_rotation(white, torch.Generator().manual_seed(0), iterations=500)
    torch.testing.assert_close(w @ w.T, torch.eye(4, dtype=F64), atol=1e-8, rtol=0)
    recovered = white @ w.T
    corr = torch.corrcoef(torch.cat([recovered, sources], dim=1).T)[:4, 4:].abs()
    assert corr.max(dim=1).values.min() > 0.99  # each component is one source (sign, order aside)
    # plain whitening mixes them: some component is far from every single source
    corr_white = torch.corrcoef(torch.cat([white, sources], dim=1).T)[:4, 4:].abs()
    assert corr_white.max(dim=1).values.min() < 0.95


def test_entry_loss_matches_row_by_row_log_softmax_and_freezes_the_table():
    g = torch.Generator().manual_seed(3)
    sentences = torch.randn(5, 6, generator=g, dtype=F64, requires_grad=True)
    entries = torch.randn(7, 6, generator=g, dtype=F64, requires_grad=True)
    targets = torch.tensor([0, 3, 6, 3, 1])
    loss = entry_loss(sentences, entries, targets)
    assert loss.item() == pytest.approx(
        slow_entry_loss(sentences.detach(), entries.detach(), targets)
    )
    loss.backward()
    assert entries.grad is None and sentences.grad is not None


def test_entry_loss_is_smallest_at_the_definitions_own_entry():
    entries = torch.eye(4, dtype=F64) * 2  # one-hot distinct entries
    target = torch.tensor([2])
    own = entry_loss(entries[2:3], entries, target)
    for k in (0, 1, 3):
        assert own < entry_loss(entries[k : k + 1], entries, target)
    assert own < entry_loss(entries[2:3] * 0.5, entries, target)  # farther along: lower
