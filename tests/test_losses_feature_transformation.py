"""FT's loss (modules/losses/feature_transformation.py): MoCo's InfoNCE against a slow loop,
the extrapolated positive's closed form (harder than the original pair), lambda = 1 changes
nothing, interpolated negatives lie between their two queue rows, the draw depends on
(seed, step) only. The loss gathers nothing (the queue is every rank's), so it has no
conformance case; tests/test_feature_transformation.py checks the module on 2 processes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from modules.losses.feature_transformation import (
    Transformation,
    draw_transformation,
    extrapolate_positives,
    feature_transformation_loss,
    interpolate_negatives,
    moco_loss,
)

F64 = torch.float64


def unit(rows: int, dim: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=generator, dtype=F64), dim=1)


def slow_ft_loss(
    q: Tensor, k: Tensor, queue: Tensor, tau: float, lam: float, mu: float, perm: list[int]
) -> Tensor:
    """The paper's recipe scalar by scalar: q^_i = lam q_i + (1 - lam) k_i, k^_i = lam k_i +
    (1 - lam) q_i, n_j = mu Q_j + (1 - mu) Q_perm[j], and per row
    -log exp(q^_i . k^_i / tau) / (exp(q^_i . k^_i / tau) + sum_j exp(q^_i . n_j / tau))."""
    b, dim = q.shape

    def dot(x: list, y: list) -> Tensor:
        return sum(x[d] * y[d] for d in range(dim))

    negatives = [
        [mu * queue[j][d] + (1 - mu) * queue[perm[j]][d] for d in range(dim)]
        for j in range(len(queue))
    ]
    total = 0
    for i in range(b):
        qi = [lam * q[i][d] + (1 - lam) * k[i][d] for d in range(dim)]
        ki = [lam * k[i][d] + (1 - lam) * q[i][d] for d in range(dim)]
        positive = torch.exp(dot(qi, ki) / tau)
        denominator = positive + sum(torch.exp(dot(qi, n) / tau) for n in negatives)
        total = total - torch.log(positive / denominator)
    return total / b


@pytest.mark.parametrize(("lam", "mu"), [(1.0, 1.0), (1.7, 0.3)])
def test_loss_and_gradient_match_the_slow_loop(lam: float, mu: float):
    q = unit(5, 4, 0).requires_grad_()
    k, queue = unit(5, 4, 1), unit(7, 4, 2)
    perm = [3, 0, 6, 1, 5, 2, 4]
    draw = Transformation(lam, mu, torch.tensor(perm))
    got = feature_transformation_loss(q, k, queue, 1 / 0.2, draw)
    want = slow_ft_loss(q, k, queue, 0.2, lam, mu, perm)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    (g,), (w,) = torch.autograd.grad(got, q), torch.autograd.grad(want, q)
    torch.testing.assert_close(g, w, rtol=0, atol=1e-12)


def test_plain_moco_is_the_untransformed_loss_and_fails_a_wrong_positive():
    q, k, queue = unit(6, 8, 3), unit(6, 8, 4), unit(10, 8, 5)
    draw = Transformation(1.0, 1.0, torch.arange(10))
    plain = moco_loss(q, k, queue, 5.0)
    torch.testing.assert_close(feature_transformation_loss(q, k, queue, 5.0, draw), plain)
    # the positive is each row's own key, not another row's
    assert not torch.allclose(plain, moco_loss(q, k.roll(1, 0), queue, 5.0))


@pytest.mark.parametrize("lam", [1.01, 1.5, 2.0])
def test_extrapolated_positive_is_harder_by_the_closed_form(lam: float):
    q, k = unit(50, 16, 6), unit(50, 16, 7)
    c = (q * k).sum(1)
    q_hat, k_hat = extrapolate_positives(q, k, lam)
    score = (q_hat * k_hat).sum(1)
    torch.testing.assert_close(score, c - 2 * lam * (lam - 1) * (1 - c), rtol=0, atol=1e-12)
    assert (score < c).all()
    assert (F.cosine_similarity(q_hat, k_hat) < c).all()


def test_lambda_one_leaves_the_pair_unchanged():
    q, k = unit(4, 6, 8), unit(4, 6, 9)
    q_hat, k_hat = extrapolate_positives(q, k, 1.0)
    torch.testing.assert_close(q_hat, q, rtol=0, atol=0)
    torch.testing.assert_close(k_hat, k, rtol=0, atol=0)


def test_interpolated_negatives_lie_between_their_two_rows():
    queue = unit(64, 8, 10)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    mixed = interpolate_negatives(queue, 0.3, perm)
    low, high = torch.minimum(queue, queue[perm]), torch.maximum(queue, queue[perm])
    assert ((mixed >= low - 1e-15) & (mixed <= high + 1e-15)).all()
    torch.testing.assert_close(mixed, 0.3 * queue + 0.7 * queue[perm])
    assert not torch.allclose(mixed, queue)  # the draw does move them


def test_the_draw_depends_on_seed_and_step_only_and_has_the_papers_ranges():
    one, again = draw_transformation(7, 3, 50, 2.0, 1.6), draw_transformation(7, 3, 50, 2.0, 1.6)
    assert (one.lam, one.mu) == (again.lam, again.mu) and torch.equal(one.perm, again.perm)
    other = draw_transformation(7, 4, 50, 2.0, 1.6)
    assert (other.lam, other.mu) != (one.lam, one.mu)
    assert sorted(one.perm.tolist()) == list(range(50))
    draws = [draw_transformation(1, s, 1, 2.0, 1.6) for s in range(2000)]
    lams, mus = np.array([d.lam for d in draws]), np.array([d.mu for d in draws])
    assert lams.min() >= 1.0 and lams.max() <= 2.0 and 0.0 <= mus.min() and mus.max() <= 1.0
    # Beta(a, a) has mean 1/2 and variance 1 / (4 (2a + 1)): 0.05 for a = 2, 0.059 for a = 1.6
    assert abs(lams.mean() - 1.5) < 0.02 and abs(mus.mean() - 0.5) < 0.02
    assert abs(lams.var() - 0.05) < 0.006 and abs(mus.var() - 1 / (4 * 4.2)) < 0.006
    off = draw_transformation(7, 3, 50, None, None)
    assert (off.lam, off.mu) == (1.0, 1.0)
