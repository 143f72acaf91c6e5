"""ConR against the official ``ConR`` of BorealisAI/ConR ``agedb-dir/loss.py`` (transcribed) and
an independent per-anchor reference, for both denominators, plus the limits of
methods/part1.md Sec. 31: no negatives -> 0, far predictions -> 0, eta = 0 and w = 1 give the
multi-positive contrastive form over P and N, rows without positives, stop-gradient on the
predictions, permutation invariance."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modules.losses.conr import conr_loss

F64 = torch.float64
TOL = dict(rtol=0.0, atol=1e-10)


def official_conr(features, targets, preds, w=1, weights=1, e=0.01):
    """``ConR(features, targets, preds, w, weights, t, e)`` of agedb-dir/loss.py, transcribed
    (``t`` is overwritten with 0.07 there); targets, preds, weights are [N, 1]."""
    t = 0.07
    q = F.normalize(features, dim=1)
    k = F.normalize(features, dim=1)
    l_k, l_q = targets.flatten()[None, :], targets
    p_k, p_q = preds.flatten()[None, :], preds
    l_dist, p_dist = torch.abs(l_q - l_k), torch.abs(p_q - p_k)
    pos_i = l_dist.le(w)
    neg_i = (~(l_dist.le(w))) * (p_dist.le(w))
    for i in range(pos_i.shape[0]):
        pos_i[i][i] = 0
    prod = torch.einsum("nc,kc->nk", [q, k]) / t
    pos, neg = prod * pos_i, prod * neg_i
    pushing_w = weights * torch.exp(l_dist * e)
    neg_exp_dot = (pushing_w * (torch.exp(neg)) * neg_i).sum(1)
    no_neg_flag = (neg_i).sum(1).bool()
    denom = pos_i.sum(1)
    loss = (
        -torch.log(torch.div(torch.exp(pos), (torch.exp(pos).sum(1) + neg_exp_dot).unsqueeze(-1)))
        * (pos_i)
    ).sum(1) / denom
    return (weights * (loss * no_neg_flag).unsqueeze(-1)).mean()


def slow_conr(features, y, y_hat, w, omega, eta, tau, official):
    """One anchor at a time from the definitions: P_i, N_i, S_ij, and the denominator with
    (official) or without the exp(0) = 1 of every non-positive column."""
    n = features.shape[0]
    f = [features[i] / torch.sqrt(features[i] @ features[i]) for i in range(n)]
    total = 0.0
    for i in range(n):
        pos = [j for j in range(n) if j != i and abs(y[i] - y[j]) <= omega]
        neg = [
            j for j in range(n) if abs(y[i] - y[j]) > omega and abs(y_hat[i] - y_hat[j]) <= omega
        ]
        if not pos or not neg:
            continue
        denominator = sum(torch.exp(f[i] @ f[p] / tau) for p in pos)
        denominator = denominator + sum(
            w[i] * math.exp(eta * abs(float(y[i] - y[m]))) * torch.exp(f[i] @ f[m] / tau)
            for m in neg
        )
        if official:
            denominator = denominator + (n - len(pos))
        row = sum(-torch.log(torch.exp(f[i] @ f[p] / tau) / denominator) for p in pos)
        total = total + w[i] * row / len(pos)
    return total / n


def _problem(b: int = 6, dim: int = 5, seed: int = 0):
    """Two views of b samples concatenated: features [2b, dim], ages, predictions, weights."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(2 * b, dim, generator=g, dtype=F64).requires_grad_()
    ages = torch.randint(18, 30, (b,), generator=g).to(F64)
    y = torch.cat([ages, ages])
    y_hat = 24 + 2 * torch.randn(2 * b, generator=g, dtype=F64)  # some wrong proximities
    w = torch.cat([torch.rand(b, generator=g, dtype=F64) + 0.5] * 2)
    return features, y, y_hat, w


@pytest.mark.parametrize("weighted", [False, True])
def test_matches_the_official_code_with_gradients(weighted):
    features, y, y_hat, w = _problem()
    weights = w if weighted else None
    got = conr_loss(features, y, y_hat, weights)
    want = official_conr(features, y[:, None], y_hat[:, None], 1, w[:, None] if weighted else 1)
    assert want > 0
    torch.testing.assert_close(got, want, **TOL)
    grad, want_grad = (torch.autograd.grad(x, features)[0] for x in (got, want))
    torch.testing.assert_close(grad, want_grad, **TOL)


@pytest.mark.parametrize("official", [True, False])
@pytest.mark.parametrize("omega, eta, tau", [(1.0, 0.01, 0.07), (2.0, 0.3, 0.5)])
def test_matches_the_slow_reference_in_both_denominators(official, omega, eta, tau):
    features, y, y_hat, w = _problem(b=5, seed=1)
    got = conr_loss(features, y, y_hat, w, omega, eta, tau, official_denominator=official)
    want = slow_conr(features, y, y_hat, w, omega, eta, tau, official)
    torch.testing.assert_close(got, want, **TOL)
    grad, want_grad = (torch.autograd.grad(x, features)[0] for x in (got, want))
    torch.testing.assert_close(grad, want_grad, **TOL)


def test_denominators_differ_by_the_ones_of_the_non_positive_columns():
    features, y, y_hat, w = _problem(seed=2)
    official = conr_loss(features, y, y_hat, w)
    paper = conr_loss(features, y, y_hat, w, official_denominator=False)
    assert official > paper  # every added term is positive


def test_anchor_without_negatives_contributes_nothing():
    features, y, y_hat, _ = _problem(seed=3)
    far = y_hat.clone()
    far[0] = far[6] = 1000.0  # both views of sample 0: predicted near no other sample
    ones = torch.ones_like(y)
    silenced = ones.clone()
    silenced[0] = silenced[6] = 0.0  # a row's weight scales only that row's term
    loss = conr_loss(features, y, far, ones)
    assert loss > 0
    torch.testing.assert_close(loss, conr_loss(features, y, far, silenced), **TOL)
    assert conr_loss(features, y, y_hat, ones) != conr_loss(features, y, y_hat, silenced)


def test_far_apart_predictions_give_zero_loss_and_gradient():
    features, y, _, _ = _problem(seed=4)
    spread = 10.0 * torch.arange(features.shape[0], dtype=F64)  # no wrong proximities
    loss = conr_loss(features, y, spread)
    assert loss == 0
    assert torch.autograd.grad(loss, features)[0].abs().sum() == 0


def test_eta_zero_unit_weights_is_multi_positive_contrast_over_positives_and_negatives():
    features, y, y_hat, _ = _problem(seed=5)
    n = features.shape[0]
    got = conr_loss(features, y, y_hat, eta=0.0, official_denominator=False)
    f = F.normalize(features, dim=1)
    logits = f @ f.T / 0.07
    close = (y[:, None] - y[None, :]).abs() <= 1
    pos = close & ~torch.eye(n, dtype=torch.bool)
    neg = ~close & ((y_hat[:, None] - y_hat[None, :]).abs() <= 1)
    log_prob = logits - torch.where(pos | neg, logits, -math.inf).logsumexp(dim=1, keepdim=True)
    per_anchor = -(log_prob * pos).sum(dim=1) / pos.sum(dim=1)  # SupCon over P and N
    want = (per_anchor * neg.any(dim=1)).sum() / n
    torch.testing.assert_close(got, want, **TOL)


def test_rows_without_positives_are_zero_not_nan():
    features = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(6))
    features.requires_grad_()
    y = torch.tensor([0.0, 5.0, 10.0, 10.5], dtype=F64)  # rows 0 and 1 have no positive
    y_hat = torch.zeros(4, dtype=F64)  # everyone predicted alike: all negatives are "wrong"
    for official in (True, False):
        loss = conr_loss(features, y, y_hat, official_denominator=official)
        want = slow_conr(features, y, y_hat, torch.ones(4, dtype=F64), 1.0, 0.01, 0.07, official)
        torch.testing.assert_close(loss, want, **TOL)
        assert torch.isfinite(torch.autograd.grad(loss, features)[0]).all()


def test_predictions_get_no_gradient_and_shapes_n_by_one_are_accepted():
    features, y, y_hat, w = _problem(seed=7)
    y_hat = y_hat.clone().requires_grad_()
    loss = conr_loss(features, y[:, None], y_hat[:, None], w[:, None])
    assert not torch.autograd.grad(loss, y_hat, allow_unused=True, materialize_grads=True)[0].any()
    torch.testing.assert_close(loss, conr_loss(features, y, y_hat.detach(), w), **TOL)
    integer_ages = conr_loss(features, y.long(), y_hat.detach(), w)  # y holds whole ages
    torch.testing.assert_close(integer_ages, loss, **TOL)


def test_invariant_to_a_joint_permutation_and_to_feature_scale():
    features, y, y_hat, w = _problem(seed=8)
    perm = torch.randperm(features.shape[0], generator=torch.Generator().manual_seed(0))
    loss = conr_loss(features, y, y_hat, w)
    torch.testing.assert_close(
        conr_loss(features[perm], y[perm], y_hat[perm], w[perm]), loss, **TOL
    )
    torch.testing.assert_close(conr_loss(3.0 * features, y, y_hat, w), loss, **TOL)


def test_gradcheck():
    features, y, y_hat, w = _problem(b=3, dim=3, seed=9)
    assert torch.autograd.gradcheck(lambda f: conr_loss(f, y, y_hat, w), (features,))
