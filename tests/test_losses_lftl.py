"""LFTL's query scores and losses (modules/losses/lftl.py) against slow loop references written
from the official code (``mining/contrastive_sampling.py``, ``mining/strategy.py``,
``mining/utils.py``), the spec's unit tests (beta = 0 is margin sampling; L_VPA falls as an
embedding rotates towards one anchor; L_IM is lowest for confident predictions spread evenly
over the classes) and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from modules.losses.lftl import (
    ENTROPY_EPS,
    contrastive_scores,
    im_loss,
    lowest,
    margins,
    update_memory,
    vpa_loss,
)


def slow_scores(probs, prev, beta, top_k, lam):
    """CASampling.query, one sample at a time."""
    n, c = probs.shape
    margin = []
    for i in range(n):
        u = [
            float(probs[i, j] + (beta * (probs[i, j] - prev[i, j]) if prev is not None else 0))
            for j in range(c)
        ]
        top = sorted(u, reverse=True)
        margin.append(top[0] - top[1])
    if lam <= 0:
        return torch.tensor(margin)
    pseudo = [int(probs[i].argmax()) for i in range(n)]
    order = sorted(range(n), key=lambda i: -margin[i])[:top_k]
    counts = [0.0] * c
    for i in order:
        counts[pseudo[i]] += 1
    biggest = max(counts)
    top_margin = max(margin)
    return torch.tensor(
        [margin[i] / top_margin + lam * counts[pseudo[i]] / biggest for i in range(n)]
    )


def _entropy_terms(p: list) -> torch.Tensor:
    """``-sum p log(p + eps)`` of a list of scalar tensors (keeps the autograd graph)."""
    return -sum(v * torch.log(v + ENTROPY_EPS) for v in p)


def slow_vpa(embeddings: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """The code's ``cosine_metric`` + softmax + ``Entropy``, one sample and anchor at a time."""
    total = 0.0
    for e in embeddings:
        cos = [(e * m).sum() / (e.norm() * m.norm()) for m in memory.detach()]
        z = sum(torch.exp(v) for v in cos)
        total = total + _entropy_terms([torch.exp(v) / z for v in cos])
    return total / len(embeddings)


def slow_im(logits: torch.Tensor) -> torch.Tensor:
    """The code's ``info_maximize_loss``, one sample and class at a time."""
    rows = []
    for row in logits:
        z = sum(torch.exp(v) for v in row)
        rows.append([torch.exp(v) / z for v in row])
    mean = [sum(col) / len(rows) for col in zip(*rows, strict=True)]
    return sum(_entropy_terms(p) for p in rows) / len(rows) - _entropy_terms(mean)


def _probs(n: int, c: int, seed: int) -> torch.Tensor:
    return (torch.randn(n, c, generator=torch.Generator().manual_seed(seed)) * 2).softmax(-1)


@pytest.mark.parametrize("lam", [0.0, 0.1, 1.0])
def test_scores_match_the_loop_reference(lam: float) -> None:
    probs, prev = _probs(40, 5, 0), _probs(40, 5, 1)
    for previous in (prev, None):
        got = contrastive_scores(probs, previous, beta=0.3, top_k=10, lambda_topk=lam)
        assert torch.allclose(got, slow_scores(probs, previous, 0.3, 10, lam), atol=1e-6)


def test_beta_zero_is_margin_sampling() -> None:
    probs, prev = _probs(50, 6, 2), _probs(50, 6, 3)
    top2 = probs.topk(2, -1).values
    margin = top2[:, 0] - top2[:, 1]
    scores = contrastive_scores(probs, prev, beta=0.0, lambda_topk=0.0)
    assert torch.allclose(scores, margin)
    assert torch.equal(lowest(scores, 7), margin.argsort(stable=True)[:7])
    # a non-zero beta moves the ranking: the extrapolation is not a no-op
    assert not torch.allclose(margins(probs, prev, 0.5), margin)


def test_class_term_lowers_the_scores_of_classes_rare_among_confident_samples() -> None:
    """Two samples with the same margin: the one whose class is rare among the top-K gets
    the lower score (queried first)."""
    confident = torch.tensor([[0.9, 0.05, 0.05]] * 5)  # class 0 dominates the top-K
    tie = torch.tensor([[0.5, 0.3, 0.2], [0.3, 0.5, 0.2]])  # same margin, classes 0 and 1
    probs = torch.cat([confident, tie])
    scores = contrastive_scores(probs, None, top_k=5, lambda_topk=0.1)
    assert scores[6] < scores[5]


def test_vpa_matches_the_loop_reference_and_falls_towards_an_anchor() -> None:
    g = torch.Generator().manual_seed(4)
    emb, memory = torch.randn(6, 4, generator=g), torch.randn(5, 4, generator=g)
    assert math.isclose(float(vpa_loss(emb, memory)), float(slow_vpa(emb, memory)), rel_tol=1e-5)
    anchors = torch.eye(3)
    start = torch.ones(3) / math.sqrt(3)  # as close to every anchor: the highest entropy
    values = []
    for t in torch.linspace(0, 1, 11):  # rotate onto anchor 0
        e = (1 - t) * start + t * anchors[0]  # in the plane of both, towards anchor 0
        values.append(float(vpa_loss(e[None], anchors)))
    assert all(b < a for a, b in zip(values, values[1:], strict=False))


def test_memory_update_weights_the_new_embedding_by_mu() -> None:
    old, new = torch.ones(2, 3), torch.zeros(2, 3)
    assert torch.allclose(update_memory(old, new, 0.9), torch.full((2, 3), 0.1))


def test_im_matches_the_loop_reference_and_is_lowest_for_confident_even_predictions() -> None:
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(5))
    assert math.isclose(float(im_loss(logits)), float(slow_im(logits)), rel_tol=1e-5, abs_tol=1e-6)
    even = torch.eye(4).repeat(2, 1) * 30  # confident, each class twice
    collapsed = torch.zeros(8, 4)
    collapsed[:, 0] = 30  # confident, one class
    uncertain = torch.zeros(8, 4)  # uniform predictions
    best = float(im_loss(even))
    assert math.isclose(best, -math.log(4 + 0), abs_tol=1e-3)  # 0 - log C
    assert best < float(im_loss(collapsed)) and best < float(im_loss(uncertain))


def test_gradients_match_finite_differences() -> None:
    g = torch.Generator().manual_seed(6)
    emb = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    memory = torch.randn(3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    logits = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e: vpa_loss(e, memory), (emb,))
    assert torch.autograd.gradcheck(im_loss, (logits,))
    vpa_loss(emb, memory).backward()
    assert memory.grad is None  # the memory is a constant
