"""MV-InfoNCE, MV-DHEL and the pairwise average (modules/losses/multi_view.py) against slow
loops written from the paper's equations (methods/part1.md Sec. 33), the K = 2 identities
(MV-DHEL is DHEL; MV-InfoNCE is NT-Xent when both views' denominators are equal), invariance to
permuting views and items, and gradients. Two processes vs one: tests/conformance/
cases_multi_view.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from modules.losses.multi_view import (
    mv_dhel_loss,
    mv_infonce_loss,
    pairwise_dhel_loss,
    pairwise_nt_xent_loss,
)
from modules.losses.simclr import nt_xent_loss

F64 = torch.float64
LOSSES = [mv_infonce_loss, mv_dhel_loss, pairwise_nt_xent_loss, pairwise_dhel_loss]


def unit_views(k: int, n: int, dim: int, seed: int) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        F.normalize(torch.randn(n, dim, generator=generator, dtype=F64), dim=1) for _ in range(k)
    ]


def _s(x: Tensor, y: Tensor, scale: Tensor | float) -> Tensor:
    return scale * sum(x[d] * y[d] for d in range(len(x)))


def slow_mv_infonce(views: list[Tensor], scale: Tensor | float) -> Tensor:
    """-1/B sum_i log [2 sum_{v<w} e^{s(z_i^v, z_i^w)} / sum_v sum_{(u,j)!=(v,i)} e^{s(z_i^v,
    z_j^u)}], scalar by scalar."""
    k, n = len(views), len(views[0])
    total = 0.0
    for i in range(n):
        positive = sum(
            torch.exp(_s(views[v][i], views[w][i], scale))
            for v in range(k)
            for w in range(v + 1, k)
        )
        denominator = sum(
            torch.exp(_s(views[v][i], views[u][j], scale))
            for v in range(k)
            for u in range(k)
            for j in range(n)
            if (u, j) != (v, i)
        )
        total = total - torch.log(2 * positive / denominator)
    return total / n


def slow_mv_dhel(views: list[Tensor], scale: Tensor | float) -> Tensor:
    """-1/B sum_i log [sum_{v<w} e^{s(z_i^v, z_i^w)} / prod_v sum_{j!=i} e^{s(z_i^v, z_j^v)}]."""
    k, n = len(views), len(views[0])
    total = 0.0
    for i in range(n):
        positive = sum(
            torch.exp(_s(views[v][i], views[w][i], scale))
            for v in range(k)
            for w in range(v + 1, k)
        )
        denominator = math.prod(
            sum(torch.exp(_s(views[v][i], views[v][j], scale)) for j in range(n) if j != i)
            for v in range(k)
        )
        total = total - torch.log(positive / denominator)
    return total / n


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize(
    ("loss", "slow"), [(mv_infonce_loss, slow_mv_infonce), (mv_dhel_loss, slow_mv_dhel)]
)
def test_matches_the_slow_loop_with_gradients(k, loss, slow):
    views = [v.requires_grad_() for v in unit_views(k, 5, 3, seed=k)]
    scale = torch.tensor(2.0, dtype=F64, requires_grad=True)
    got, want = loss(views, scale), slow(views, scale)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    for g, w in zip(
        torch.autograd.grad(got, [*views, scale]),
        torch.autograd.grad(want, [*views, scale]),
        strict=True,
    ):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12)


def test_pairwise_is_the_two_view_loss_averaged_over_view_pairs():
    a, b, c = unit_views(3, 6, 4, seed=1)
    want = (nt_xent_loss(a, b, 2.0) + nt_xent_loss(a, c, 2.0) + nt_xent_loss(b, c, 2.0)) / 3
    torch.testing.assert_close(pairwise_nt_xent_loss([a, b, c], 2.0), want, rtol=0, atol=1e-14)
    dhel = [slow_mv_dhel([x, y], 2.0) for x, y in ((a, b), (a, c), (b, c))]
    torch.testing.assert_close(
        pairwise_dhel_loss([a, b, c], 2.0), sum(dhel) / 3, rtol=0, atol=1e-12
    )
    # with K views the multi-view losses are not the pairwise average
    assert not torch.allclose(
        mv_infonce_loss([a, b, c], 2.0), pairwise_nt_xent_loss([a, b, c], 2.0)
    )
    assert not torch.allclose(mv_dhel_loss([a, b, c], 2.0), pairwise_dhel_loss([a, b, c], 2.0))


def test_k2_mv_dhel_is_dhel():
    """-log e^{s_12} / (D_1 D_2), D_v the sum over the other items of view v (NTXentHPS)."""
    a, b = unit_views(2, 7, 4, seed=2)
    scale = 2.0
    same_a, same_b = (torch.exp(scale * x @ x.T) for x in (a, b))
    eye = torch.eye(7, dtype=torch.bool)
    d_a, d_b = (m.masked_fill(eye, 0).sum(1) for m in (same_a, same_b))
    want = -torch.log(torch.exp(scale * (a * b).sum(1)) / (d_a * d_b)).mean()
    torch.testing.assert_close(mv_dhel_loss([a, b], scale), want, rtol=0, atol=1e-12)


def test_k2_mv_infonce_is_nt_xent_when_the_denominators_are_equal():
    """Second view = a reflection of the first (an orthogonal map of the sphere): every
    similarity of view b's row i equals view a's, so both NT-Xent denominators are equal, and
    -log 2 e^s / (D + D) = -log e^s / D. With unequal denominators MV-InfoNCE's log of the
    mean denominator exceeds NT-Xent's mean of the logs (Jensen)."""
    (a,) = unit_views(1, 6, 4, seed=3)
    mirror = torch.eye(4, dtype=F64)
    mirror[0, 0] = -1.0
    b = a @ mirror
    torch.testing.assert_close(
        mv_infonce_loss([a, b], 2.0), nt_xent_loss(a, b, 2.0), rtol=0, atol=1e-12
    )
    c, d = unit_views(2, 6, 4, seed=4)
    assert mv_infonce_loss([c, d], 2.0) > nt_xent_loss(c, d, 2.0) + 1e-6


@pytest.mark.parametrize("loss", LOSSES)
def test_invariant_to_permuting_views_and_items(loss):
    views = unit_views(4, 6, 3, seed=5)
    value = loss(views, 3.0)
    torch.testing.assert_close(loss(views[::-1], 3.0), value, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        loss([views[2], views[0], views[3], views[1]], 3.0), value, rtol=0, atol=1e-12
    )
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    torch.testing.assert_close(loss([v[order] for v in views], 3.0), value, rtol=0, atol=1e-12)
    # permuting one view's items alone breaks the positives
    assert not torch.allclose(loss([views[0][order], *views[1:]], 3.0), value)


@pytest.mark.parametrize("loss", LOSSES)
def test_perfect_views_of_far_items_give_the_floor(loss):
    """K identical views of orthogonal items at a large scale: every positive has logit s,
    every negative 0. MV-InfoNCE: each item's K rows hold K(K-1) positives, its numerator
    2 P = K(K-1) of them: the loss tends to 0, as NT-Xent's. MV-DHEL: the P = K(K-1)/2
    positives over K per-view sums of n - 1 ones: -log P - s + K log(n - 1)."""
    k, n, scale = 3, 4, 60.0
    items = torch.eye(8, dtype=F64)[:n]
    views = [items.clone() for _ in range(k)]
    value = loss(views, scale)
    if loss in (mv_infonce_loss, pairwise_nt_xent_loss):
        expected = 0.0
    elif loss is mv_dhel_loss:
        expected = -math.log(3) - scale + k * math.log(n - 1)
    else:  # DHEL of each pair: -s + 2 log(n - 1)
        expected = -scale + 2 * math.log(n - 1)
    torch.testing.assert_close(value, torch.tensor(expected, dtype=F64), rtol=0, atol=1e-9)


def test_rejects_one_view_and_unequal_shapes():
    a, b = unit_views(2, 4, 3, seed=6)
    with pytest.raises(AssertionError, match="at least 2 views"):
        mv_infonce_loss([a], 1.0)
    with pytest.raises(AssertionError, match="view shapes differ"):
        mv_dhel_loss([a, b[:3]], 1.0)
