"""The hard-negative contrastive loss (modules/losses/hard_negative.py) and the NT-Xent primitive
it masks (modules/losses/simclr.py ``nt_xent_logits``), against Wang & Liu (CVPR 2021):

(a) the gradient of the contrastive loss w.r.t. the similarities is ``P_ij / tau`` on a negative
    and ``-(1/tau) sum_{k != i} P_ik`` on the positive (the paper's gradient analysis): the pull
    equals the sum of the pushes; autograd's embedding gradients are that formula through
    ``s = z z^T``;
(b) the relative penalty ``r_i(s_ij)`` concentrates on the hardest negative as tau
    falls, and is uniform as tau grows;
(c) ``L_hard`` with every negative in ``H_i`` is NT-Xent exactly;
and ``L_hard`` against a slow loop written from the paper's formula, with the negatives outside
``H_i`` getting no gradient. The 2-process case is tests/conformance/cases_hard_negative.py.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from modules.losses.hard_negative import hard_negative_loss, hard_negative_mask
from modules.losses.simclr import nt_xent_logits, nt_xent_loss
from tests.test_simclr import unit

F64 = torch.float64


def slow_hard_negative(a: Tensor, b: Tensor, scale: Tensor | float, fraction: float) -> Tensor:
    """``L_hard`` anchor by anchor: z = [a; b], the positive of z_i its other view, H_i the
    ``ceil(fraction * (2N - 2))`` negatives of largest similarity, and ``-log exp(s_ii) /
    (exp(s_ii) + sum_{k in H_i} exp(s_ik))`` averaged over the 2N anchors."""
    n = len(a)
    z = torch.cat([a, b])
    keep = max(1, math.ceil(fraction * (2 * n - 2)))
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        positive = scale * torch.dot(z[i], z[j])
        negatives = [scale * torch.dot(z[i], z[k]) for k in range(2 * n) if k not in (i, j)]
        hard = sorted(negatives, key=lambda s: s.item(), reverse=True)[:keep]
        denominator = torch.exp(positive) + sum(torch.exp(s) for s in hard)
        total = total - (positive - torch.log(denominator))
    return total / (2 * n)


def formula_similarity_gradient(z: Tensor, tau: float, kept: Tensor | None = None) -> Tensor:
    """``dL/ds`` [2N, 2N] from the gradient formula, for the mean over the 2N anchors of
    z = [a; b]: ``P_ik = exp(s_ik/tau) / sum_{k' in D_i} exp(s_ik'/tau)`` over the row's
    denominator ``D_i`` (every k != i, or the positive and ``kept``), ``P_ik / tau`` on a
    negative, ``-(1/tau) sum P`` over the negatives on the positive, zero elsewhere."""
    rows = len(z)
    n = rows // 2
    s = (z @ z.T).detach()
    grad = torch.zeros_like(s)
    for i in range(rows):
        j = (i + n) % rows
        members = [k for k in range(rows) if k != i and (kept is None or k == j or kept[i, k])]
        weights = torch.stack([torch.exp(s[i, k] / tau) for k in members])
        p = weights / weights.sum()
        for k, p_ik in zip(members, p, strict=True):
            if k != j:
                grad[i, k] = p_ik / tau
        grad[i, j] = -sum(p_ik for k, p_ik in zip(members, p, strict=True) if k != j) / tau
    return grad / rows


def similarity_gradient(a: Tensor, b: Tensor, tau: float) -> Tensor:
    """Autograd ``dL/ds`` of NT-Xent through its logits (``s = tau * logits``)."""
    a, b = a.detach().requires_grad_(), b.detach().requires_grad_()
    logits, positive = nt_xent_logits(a, b, 1.0 / tau)
    logits.retain_grad()
    F.cross_entropy(logits, positive).backward()
    return logits.grad / tau


def test_nt_xent_is_cross_entropy_over_its_logits():
    a, b = unit(5, 4, 0), unit(5, 4, 1)
    logits, positive = nt_xent_logits(a, b, 3.0)
    assert torch.equal(F.cross_entropy(logits, positive), nt_xent_loss(a, b, 3.0))
    assert torch.isinf(logits.diagonal()).all() and torch.equal(positive, torch.arange(10).roll(5))


@pytest.mark.parametrize("tau", [0.1, 0.5, 2.0])
def test_gradient_is_p_over_tau_and_the_pull_equals_the_pushes(tau):
    """(a) autograd's similarity gradient is the formula, and per anchor the positive's
    magnitude equals the sum of the negatives' magnitudes; the embedding gradient autograd gives
    is that formula through s = z z^T (both factors)."""
    a, b = unit(6, 5, 2).requires_grad_(), unit(6, 5, 3).requires_grad_()
    z = torch.cat([a, b])
    want = formula_similarity_gradient(z, tau)
    got = similarity_gradient(a, b, tau)
    got = got.masked_fill(torch.eye(12, dtype=torch.bool), 0.0)  # the sample itself: no entry
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    positive = torch.arange(12).roll(6)
    pull = -got[torch.arange(12), positive]
    pushes = got.sum(dim=1) + pull
    assert (pull > 0).all() and (got.clamp_max(0).sum(dim=1) == -pull).all()
    torch.testing.assert_close(pull, pushes, rtol=0, atol=1e-14)
    grads = torch.autograd.grad(nt_xent_loss(a, b, 1.0 / tau), (a, b))
    chain = (want + want.T) @ z.detach()
    torch.testing.assert_close(torch.cat(grads), chain, rtol=0, atol=1e-12)


def test_smaller_tau_concentrates_the_relative_penalty_on_the_hardest_negative():
    """(b) r_i(s_ij), each negative's share of the anchor's push (read off the autograd
    gradient), is exp(s_ij/tau) normalised over the negatives; its largest share, always on the
    most similar negative, grows as tau falls, to ~1 at tau -> 0 and ~uniform at tau -> inf."""
    a, b = unit(8, 6, 4), unit(8, 6, 5)
    z = torch.cat([a, b])
    s = z @ z.T
    negative = ~torch.eye(16, dtype=torch.bool) & ~torch.eye(16, dtype=torch.bool).roll(8, 1)
    hardest = s.masked_fill(~negative, -2.0).argmax(dim=1)
    shares = []
    for tau in (100.0, 1.0, 0.5, 0.2, 0.07, 0.005):
        push = similarity_gradient(a, b, tau).masked_fill(~negative, 0.0)
        r = push / push.sum(dim=1, keepdim=True)
        eq3 = torch.softmax((s / tau).masked_fill(~negative, -torch.inf), dim=1)
        torch.testing.assert_close(r, eq3, rtol=0, atol=1e-12)
        assert torch.equal(r.argmax(dim=1), hardest)
        shares.append(r.max(dim=1).values)
    shares = torch.stack(shares)  # [taus, anchors]
    assert (shares[1:] >= shares[:-1]).all() and (shares.mean(dim=1).diff() > 0).all()
    top2 = s.masked_fill(~negative, -2.0).topk(2, dim=1).values
    clear = top2[:, 0] - top2[:, 1] > 0.05  # exp(-0.05 / 0.005) * 13 < 1e-3: no near-tie
    assert clear.sum() >= 12
    assert (shares[0] < 1.05 / 14).all() and (shares[-1][clear] > 0.99).all()


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.9, 1.0])
def test_hard_negative_loss_matches_the_slow_loop(fraction):
    a, b = unit(6, 5, 6).requires_grad_(), unit(6, 5, 7).requires_grad_()
    scale = torch.tensor(2.5, dtype=F64, requires_grad=True)
    got = hard_negative_loss(a, b, scale, fraction)
    want = slow_hard_negative(a, b, scale, fraction)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    for g, w in zip(
        torch.autograd.grad(got, (a, b, scale)),
        torch.autograd.grad(want, (a, b, scale)),
        strict=True,
    ):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12)


def test_all_negatives_is_nt_xent_exactly():
    """(c) H_i = every negative: the same value and gradients as NT-Xent, bit for bit."""
    a, b = unit(7, 5, 8).requires_grad_(), unit(7, 5, 9).requires_grad_()
    hard, plain = hard_negative_loss(a, b, 4.0, fraction=1.0), nt_xent_loss(a, b, 4.0)
    assert torch.equal(hard, plain)
    grads = zip(torch.autograd.grad(hard, (a, b)), torch.autograd.grad(plain, (a, b)), strict=True)
    for g, w in grads:
        assert torch.equal(g, w)
    assert hard_negative_loss(a, b, 4.0, fraction=0.25) < plain  # fewer terms in each denominator


def test_only_the_hard_negatives_get_a_gradient():
    """The gradient formula restricted to H_i: the kept negatives share the push by their
    exp(s/tau), the rest get nothing (through the chain rule to the embeddings, checked against
    autograd)."""
    tau = 0.5
    a, b = unit(6, 5, 10).requires_grad_(), unit(6, 5, 11).requires_grad_()
    logits, positive = nt_xent_logits(a.detach(), b.detach(), 1.0 / tau)
    kept = hard_negative_mask(logits, positive, 0.3)
    assert kept.sum(dim=1).eq(3).all()  # ceil(0.3 * 10)
    assert not kept.diagonal().any() and not kept[torch.arange(12), positive].any()
    z = torch.cat([a, b])
    want = formula_similarity_gradient(z, tau, kept)
    assert torch.equal(want != 0, kept | F.one_hot(positive, 12).bool())
    grads = torch.autograd.grad(hard_negative_loss(a, b, 1.0 / tau, 0.3), (a, b))
    torch.testing.assert_close(torch.cat(grads), (want + want.T) @ z.detach(), rtol=0, atol=1e-12)


def test_hard_negative_mask_limits():
    logits, positive = nt_xent_logits(unit(4, 3, 12), unit(4, 3, 13), 1.0)
    assert hard_negative_mask(logits, positive, 1e-6).sum(dim=1).eq(1).all()  # at least one
    assert hard_negative_mask(logits, positive, 1.0).sum(dim=1).eq(6).all()
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="fraction must be in"):
            hard_negative_mask(logits, positive, bad)
