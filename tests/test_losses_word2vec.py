"""CBOW with negative sampling (modules/losses/word2vec.py) against a loop reference."""

from __future__ import annotations

import math

import pytest
import torch

from modules.losses.word2vec import cbow_negative_sampling


def slow_cbow(context, center, negatives):
    """The loss word by word, with torch scalars (differentiable)."""
    total = 0.0
    for b in range(len(context)):
        total = total - torch.log(torch.sigmoid(context[b] @ center[b]))
        for n in negatives[b]:
            total = total - torch.log(torch.sigmoid(-(context[b] @ n)))
    return total / len(context)


def test_matches_the_loop_reference_and_gradcheck() -> None:
    g = torch.Generator().manual_seed(0)
    h, u = (
        torch.randn(4, 3, generator=g, dtype=torch.float64),
        torch.randn(4, 3, generator=g, dtype=torch.float64),
    )
    neg = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(cbow_negative_sampling(h, u, neg), slow_cbow(h, u, neg))
    inputs = tuple(t.clone().requires_grad_() for t in (h, u, neg))
    assert torch.autograd.gradcheck(cbow_negative_sampling, inputs)


def test_zero_output_vectors_give_log_two_per_word() -> None:
    """gensim starts U at zero: every sigmoid is 1/2, the loss (1 + K) log 2."""
    h = torch.randn(3, 4)
    loss = cbow_negative_sampling(h, torch.zeros(3, 4), torch.zeros(3, 6, 4))
    assert loss.item() == pytest.approx(7 * math.log(2), rel=1e-6)


def test_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="negatives"):
        cbow_negative_sampling(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4, 5))
