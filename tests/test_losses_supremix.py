"""SupReMix (modules/losses/supremix.py) against an independent reference that builds every
mixture embedding explicitly, one anchor at a time (detached mixtures, 1 + |dy| weights), plus
the spec's checks (methods/part1.md section 32): the hard-positive alpha gives y_a exactly, an
alpha = 1 anchor-inclusive mixture is the anchor, hard positives exist only between
bracketing labels within the window; mixtures pass no gradient to their members; the
ablations reduce to weighted SupCon."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modules.losses.supcon import supcon_loss
from modules.losses.supremix import (
    hard_positive_alpha,
    hard_positive_pairs,
    mix,
    supremix_loss,
)

F64 = torch.float64
TOL = dict(rtol=0.0, atol=1e-10)
#: Two views of 5 samples: targets with bracketing pairs within 5, one far, one repeated.
SIZES = torch.tensor([10.0, 12.5, 14.0, 12.5, 30.0], dtype=F64)


def slow_supremix(features, targets, anchor_weight, tau, window, weighted, neg=True, pos=True):
    """Per anchor: the list of (mixture embedding, label, is positive) built from the
    definitions, then -mean over positives of log(exp(l_p) / sum_x w_x exp(l_x))."""
    n = features.shape[0]
    f = [features[i] / torch.sqrt(features[i] @ features[i]) for i in range(n)]
    y = [float(t) for t in targets]
    total = 0.0
    for a in range(n):
        terms = []  # (embedding, label, positive)
        for c in range(n):
            if c != a:
                terms.append((f[c], y[c], y[c] == y[a]))
        if neg:
            for c in range(n):
                if y[c] != y[a]:
                    w = anchor_weight[a, c]
                    m = w * f[a].detach() + (1 - w) * f[c].detach()
                    terms.append((m, float(w) * y[a] + (1 - float(w)) * y[c], False))
        if pos:
            for j in range(n):
                for k in range(n):
                    if y[j] < y[a] < y[k] and y[a] - y[j] < window and y[k] - y[a] < window:
                        alpha = (y[k] - y[a]) / (y[k] - y[j])
                        m = alpha * f[j].detach() + (1 - alpha) * f[k].detach()
                        terms.append((m, alpha * y[j] + (1 - alpha) * y[k], True))
        logits = [f[a] @ m / tau for m, _, _ in terms]
        weights = [1 + abs(y[a] - label) if weighted else 1.0 for _, label, _ in terms]
        denominator = sum(w * torch.exp(l) for w, l in zip(weights, logits, strict=True))
        positives = [l for l, (_, _, p) in zip(logits, terms, strict=True) if p]
        if positives:
            total = total - sum(l - torch.log(denominator) for l in positives) / len(positives)
    return total / n


def inputs(seed: int = 0, sizes: torch.Tensor = SIZES):
    g = torch.Generator().manual_seed(seed)
    n = 2 * len(sizes)
    features = torch.randn(n, 4, generator=g, dtype=F64)
    alpha = torch.distributions.Beta(2.0, 8.0).sample((n, n)).to(F64)
    return features, sizes.repeat(2), alpha


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize(("neg", "pos"), [(True, True), (True, False), (False, True)])
def test_matches_the_explicit_mixture_reference_in_value_and_gradient(weighted, neg, pos):
    torch.manual_seed(0)
    features, targets, alpha = inputs()
    a = features.clone().requires_grad_(True)
    b = features.clone().requires_grad_(True)
    got = supremix_loss(a, targets, alpha, 0.3, 5.0, weighted, neg, pos)
    want = slow_supremix(b, targets, alpha, 0.3, 5.0, weighted, neg, pos)
    torch.testing.assert_close(got, want, **TOL)
    got.backward()
    want.backward()
    torch.testing.assert_close(a.grad, b.grad, **TOL)


def test_hard_positive_alpha_reproduces_the_anchor_label_exactly():
    g = torch.Generator().manual_seed(1)
    low = torch.rand(100, generator=g, dtype=F64) * 10
    high = low + 0.01 + torch.rand(100, generator=g, dtype=F64) * 10
    anchor = low + torch.rand(100, generator=g, dtype=F64) * (high - low)
    alpha = hard_positive_alpha(anchor, low, high)
    assert ((alpha >= 0) & (alpha <= 1)).all()
    torch.testing.assert_close(mix(low, high, alpha), anchor, rtol=0.0, atol=1e-12)
    # the pair mask's alphas too
    mask, alphas = hard_positive_pairs(SIZES, SIZES, 5.0)
    y_a, y_j, y_k = SIZES[:, None, None], SIZES[None, :, None], SIZES[None, None, :]
    mixed = alphas * y_j + (1 - alphas) * y_k
    torch.testing.assert_close(mixed[mask], y_a.expand_as(mask)[mask], rtol=0.0, atol=1e-12)


def test_alpha_one_anchor_inclusive_mixture_is_the_anchor():
    anchor, other = torch.randn(2, 8, dtype=F64)
    torch.testing.assert_close(mix(anchor, other, 1.0), anchor, rtol=0.0, atol=0.0)
    torch.testing.assert_close(mix(anchor, other, 0.0), other, rtol=0.0, atol=0.0)
    # in the loss: alpha = 1 negatives have logit <f_a, f_a>/tau = 1/tau and weight 1
    features, targets, _ = inputs()
    ones = torch.ones(len(targets), len(targets), dtype=F64)
    got = supremix_loss(features, targets, ones, 0.3, 5.0, True, True, False)
    base = supremix_loss(features, targets, ones, 0.3, 5.0, True, False, False)
    f = F.normalize(features, dim=1)
    gap = (targets[:, None] - targets[None, :]).abs()
    logits = f @ f.T / 0.3
    own = torch.eye(len(targets), dtype=torch.bool)
    real = torch.where(own, -math.inf, logits + torch.log1p(gap)).logsumexp(dim=1)
    extra = torch.log((gap > 0).sum(dim=1).to(F64)) + 1 / 0.3  # that many exp(1/tau)
    shift = torch.logaddexp(real, extra) - real  # each row's log-denominator grows by this
    torch.testing.assert_close(got, base + shift.mean(), **TOL)


def test_hard_positives_exist_only_between_bracketing_labels_within_the_window():
    y = torch.tensor([10.0, 12.0, 14.0, 30.0], dtype=F64)
    mask, _ = hard_positive_pairs(y, y, 5.0)
    per_anchor = mask.flatten(1).sum(dim=1)
    # 10: nothing below; 30: nothing below within 5 and nothing above; 14: nothing above
    # within 5; only 12 is bracketed (by 10 and 14)
    assert per_anchor.tolist() == [0, 1, 0, 0]
    assert mask[1, 0, 2]
    # equal labels never bracket (strict inequalities), nor does a pair just outside
    assert not hard_positive_pairs(torch.tensor([5.0]), torch.tensor([5.0, 5.0]), 5.0)[0].any()
    just_outside, _ = hard_positive_pairs(torch.tensor([5.0]), torch.tensor([0.0, 7.0]), 5.0)
    assert not just_outside.any()  # 5 - 0 = 5 is not < 5
    # without bracketing labels the positive mixtures change nothing
    one_sided = torch.tensor([10.0, 11.0, 12.0], dtype=F64)
    assert not hard_positive_pairs(one_sided[:1], one_sided, 5.0)[0].any()
    far = torch.tensor([10.0, 20.0, 30.0, 40.0], dtype=F64)
    features, targets, alpha = inputs(2, far)
    with_pos = supremix_loss(features, targets, alpha, 0.3, 5.0)
    without = supremix_loss(features, targets, alpha, 0.3, 5.0, mix_positives=False)
    torch.testing.assert_close(with_pos, without, **TOL)


def test_mixtures_pass_gradient_to_the_anchor_only():
    """The gradient equals the reference's, whose mixtures are built from detached embeddings,
    and differs from the same loss with the mixtures' members left in the graph."""
    features, targets, alpha = inputs(3)
    a = features.clone().requires_grad_(True)
    supremix_loss(a, targets, alpha).backward()
    b = features.clone().requires_grad_(True)
    slow_supremix(b, targets, alpha, 0.3, 5.0, True).backward()
    torch.testing.assert_close(a.grad, b.grad, **TOL)
    c = features.clone().requires_grad_(True)
    undetached = _without_detach(c, targets, alpha)
    undetached.backward()
    assert not torch.allclose(a.grad, c.grad)


def _without_detach(features, targets, alpha):
    """The reference with the mixtures' members left in the graph (what the code avoids)."""
    n = features.shape[0]
    f = F.normalize(features, dim=1)
    y = [float(t) for t in targets]
    total = 0.0
    for a in range(n):
        logits, weights, positive = [], [], []
        for c in range(n):
            if c != a:
                logits.append(f[a] @ f[c] / 0.3)
                weights.append(1 + abs(y[a] - y[c]))
                positive.append(y[c] == y[a])
            if y[c] != y[a]:
                w = float(alpha[a, c])
                logits.append(f[a] @ (w * f[a] + (1 - w) * f[c]) / 0.3)
                weights.append(1 + (1 - w) * abs(y[a] - y[c]))
                positive.append(False)
        for j in range(n):
            for k in range(n):
                if y[j] < y[a] < y[k] and y[a] - y[j] < 5 and y[k] - y[a] < 5:
                    t = (y[k] - y[a]) / (y[k] - y[j])
                    logits.append(f[a] @ (t * f[j] + (1 - t) * f[k]) / 0.3)
                    weights.append(1.0)
                    positive.append(True)
        log_d = torch.log(sum(w * torch.exp(x) for w, x in zip(weights, logits, strict=True)))
        pos = [x for x, p in zip(logits, positive, strict=True) if p]
        total = total - sum(x - log_d for x in pos) / len(pos)
    return total / n


def test_without_mixtures_or_weights_it_is_supcon_on_exact_labels():
    features, targets, alpha = inputs(4)
    got = supremix_loss(features, targets, alpha, 0.3, 5.0, False, False, False)
    half = len(targets) // 2
    views = [F.normalize(features[:half], dim=1), F.normalize(features[half:], dim=1)]
    labels = torch.unique(targets[:half], return_inverse=True)[1]
    torch.testing.assert_close(got, supcon_loss(views, labels, 0.3), **TOL)


def test_invariant_to_permuting_the_rows():
    features, targets, alpha = inputs(5)
    perm = torch.randperm(len(targets), generator=torch.Generator().manual_seed(0))
    got = supremix_loss(features[perm], targets[perm], alpha[perm][:, perm])
    torch.testing.assert_close(got, supremix_loss(features, targets, alpha), **TOL)


def test_gradcheck_without_mixtures():
    """Only the mixture-free loss is the gradient of its value (the mixtures are detached, so
    finite differences, which move them too, cannot check the full loss; the reference does)."""
    features, targets, alpha = inputs(6, torch.tensor([10.0, 12.0, 14.0], dtype=F64))
    features.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: supremix_loss(x, targets, alpha, mix_negatives=False, mix_positives=False),
        (features,),
    )
