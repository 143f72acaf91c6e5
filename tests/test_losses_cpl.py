"""CPL's losses (modules/losses/cpl.py) against slow per-item references written from the
official code's semantics, and the spec's unit tests (methods/part1.md section 3): m = 0 gives
CE; L_GLV = 0 for identical one-hot pairs; H(p_bar) = log K for a uniform mean; L_CSP -> 0 as
the confidence -> 0 or with the mask 0."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from modules.losses.cpl import (
    csp_loss,
    glv_loss,
    glv_partners,
    margin_cross_entropy,
    mean_entropy,
)

F64 = torch.float64
TOL = dict(rtol=0.0, atol=1e-12)


def draw(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ------------------------------------------------------------------ slow references


def slow_margin_ce(logits, labels, labelled, margin):
    """The code's MarginLoss(m=-margin, s=1): the true logit raised by ``margin``, one row at a
    time, averaged over the labelled rows."""
    losses = []
    for i in range(len(labels)):
        if not labelled[i]:
            continue
        z = [float(v) for v in logits[i]]
        y = int(labels[i])
        z[y] += margin
        log_norm = math.log(sum(math.exp(v) for v in z))
        losses.append(log_norm - z[y])
    return sum(losses) / len(losses) if losses else 0.0


def slow_partners(labels, labelled, global_feat, part_feat, choice, choose_k=2):
    """The code's ``_get_pair`` restated with python loops and full sorts."""
    n = len(labels)
    lab = [i for i in range(n) if labelled[i]]
    partner, voted = list(range(n)), [False] * n
    for i in lab:
        same = [j for j in lab if labels[j] == labels[i] and j != i]
        if same:
            partner[i] = same[min(int(float(choice[i]) * len(same)), len(same) - 1)]

    def cos(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    num_parts = part_feat.shape[2]
    norms = [[float(part_feat[i, :, p].norm()) for p in range(num_parts)] for i in range(n)]
    weights = [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in norms]
    part_sim = [
        [
            sum(
                weights[i][p] * cos(part_feat[i, :, p], part_feat[j, :, p])
                for p in range(num_parts)
            )
            for j in range(n)
        ]
        for i in range(n)
    ]
    for u in range(n):
        if labelled[u]:
            continue
        sims = [cos(global_feat[u], global_feat[j]) for j in range(n)]
        order = sorted(range(n), key=lambda j: -sims[j])
        top1, top2 = order[0], order[1]
        best_row = sorted(part_sim[u], reverse=True)[1]
        best_col = sorted((part_sim[i][top2] for i in range(n)), reverse=True)[choose_k - 1]
        accept = best_row >= best_col
        partner[u] = top2 if accept else top1
        voted[u] = accept
    return partner, voted


def slow_glv(logits, partner):
    probs = logits.softmax(dim=1)
    terms = [-max(math.log(float(probs[a] @ probs[partner[a]])), -100.0) for a in range(len(probs))]
    return sum(terms) / len(terms)


def slow_csp(logits, gumbel, voted, unlabelled, tau=1.0):
    total, count = 0.0, 0
    for i in range(len(logits)):
        if not unlabelled[i]:
            continue
        count += 1
        noisy = [(float(logits[i, k]) + float(gumbel[i, k])) / tau for k in range(logits.shape[1])]
        norm = math.log(sum(math.exp(v) for v in noisy))
        soft = [math.exp(v - norm) for v in noisy]
        log_p = [float(v) for v in logits[i].log_softmax(dim=0)]
        conf = math.exp(log_p[max(range(len(soft)), key=lambda k: soft[k])])
        ce = -sum(s * lp for s, lp in zip(soft, log_p, strict=True))
        total += ce * conf * float(voted[i])
    return total / count if count else 0.0


def slow_entropy(logits):
    probs = logits.softmax(dim=1)
    mean = [max(float(probs[:, k].mean()), 1e-8) for k in range(probs.shape[1])]
    return -sum(p * math.log(p) for p in mean)


def csp_with_fixed_targets(anchor, gumbel, voted, unlabelled):
    """L_CSP as a function of the logits with the soft pseudo-labels (and their argmax) taken
    from ``anchor``: what the stop-gradient means."""
    soft = (anchor + gumbel).softmax(dim=1)
    picked = soft.argmax(dim=1, keepdim=True)

    def loss(x):
        log_p = x.log_softmax(dim=1)
        conf = log_p.exp().gather(1, picked).squeeze(1)
        per_item = -(soft * log_p).sum(1) * conf * (voted & unlabelled).to(x.dtype)
        return per_item.sum() / unlabelled.sum()

    return loss


# ------------------------------------------------------------------ against the references

LABELS = torch.tensor([0, 1, 0, 2, 1, 0, 3, 4, 5, 1])
LABELLED = torch.tensor([1, 1, 1, 1, 0, 1, 0, 0, 0, 0], dtype=torch.bool)


def test_margin_ce_matches_the_reference_and_is_ce_at_zero_margin() -> None:
    logits = draw(10, 6)
    for margin in (0.2, -0.3, 0.0):
        got = margin_cross_entropy(logits, LABELS, LABELLED, margin)
        assert math.isclose(
            float(got), slow_margin_ce(logits, LABELS, LABELLED, margin), abs_tol=1e-12
        )
    plain = F.cross_entropy(logits[LABELLED], LABELS[LABELLED])
    torch.testing.assert_close(margin_cross_entropy(logits, LABELS, LABELLED, 0.0), plain, **TOL)
    # the code's sign: a positive margin raises the true logit, so the loss drops
    assert margin_cross_entropy(logits, LABELS, LABELLED, 0.2) < plain
    # unlabelled rows' labels are never read
    other = torch.where(LABELLED, LABELS, torch.full_like(LABELS, 5))
    torch.testing.assert_close(
        margin_cross_entropy(logits, other, LABELLED, 0.2),
        margin_cross_entropy(logits, LABELS, LABELLED, 0.2),
        **TOL,
    )
    assert float(margin_cross_entropy(logits, LABELS, torch.zeros(10, dtype=torch.bool), 0.2)) == 0


def test_partners_match_the_reference() -> None:
    for seed in range(4):
        feat, parts = draw(10, 5, seed=seed), draw(10, 4, 3, seed=seed + 10)
        choice = torch.rand(10, generator=torch.Generator().manual_seed(seed), dtype=F64)
        partner, voted = glv_partners(LABELS, LABELLED, feat, parts, choice)
        want_partner, want_voted = slow_partners(LABELS, LABELLED, feat, parts, choice)
        assert partner.tolist() == want_partner
        assert voted.tolist() == want_voted


def test_partners_of_labelled_items_share_their_class_and_differ_from_them() -> None:
    feat, parts = draw(10, 5), draw(10, 4, 3, seed=1)
    for seed in range(5):
        choice = torch.rand(10, generator=torch.Generator().manual_seed(seed), dtype=F64)
        partner, voted = glv_partners(LABELS, LABELLED, feat, parts, choice)
        for i in torch.nonzero(LABELLED).flatten().tolist():
            j = int(partner[i])
            assert LABELLED[j] and LABELS[j] == LABELS[i]
            alone = int((LABELLED & (LABELS == LABELS[i])).sum()) == 1
            assert (j == i) == alone
        assert not voted[LABELLED].any()


def test_an_unlabelled_duplicate_is_voted_for() -> None:
    """Two identical unlabelled items among random ones: each other's neighbour, accepted."""
    feat, parts = draw(6, 5), draw(6, 4, 3, seed=2)
    feat[5], parts[5] = feat[4], parts[4]
    labelled = torch.tensor([1, 1, 0, 0, 0, 0], dtype=torch.bool)
    labels = torch.tensor([0, 0, 1, 2, 3, 3])
    partner, voted = glv_partners(labels, labelled, feat, parts, torch.zeros(6, dtype=F64))
    assert {int(partner[4]), int(partner[5])} <= {4, 5} and voted[4] and voted[5]


def test_glv_matches_the_reference_and_vanishes_for_identical_one_hot_pairs() -> None:
    logits = draw(10, 6)
    partner = torch.tensor([2, 4, 0, 3, 1, 2, 6, 9, 8, 7])
    assert math.isclose(float(glv_loss(logits, partner)), slow_glv(logits, partner), abs_tol=1e-12)
    one_hot = 60.0 * F.one_hot(torch.tensor([1, 1, 3, 3]), 6).to(F64)  # softmax ~ one-hot
    assert float(glv_loss(one_hot, torch.tensor([1, 0, 3, 2]))) < 1e-12
    # disjoint one-hot predictions: the log is clamped at -100, as torch's BCE
    far = 300.0 * F.one_hot(torch.tensor([1, 1, 3, 3]), 6).to(F64)
    assert math.isclose(float(glv_loss(far, torch.tensor([2, 3, 0, 1]))), 100.0)


def test_csp_matches_the_reference_and_vanishes_without_confidence_or_mask() -> None:
    logits, gumbel = draw(10, 6), draw(10, 6, seed=3)
    voted = torch.tensor([0, 0, 0, 0, 1, 0, 1, 1, 0, 1], dtype=torch.bool)
    got = csp_loss(logits, gumbel, voted, ~LABELLED, tau=0.7)
    assert math.isclose(float(got), slow_csp(logits, gumbel, voted, ~LABELLED, 0.7), abs_tol=1e-12)
    assert float(csp_loss(logits, gumbel, torch.zeros_like(voted), ~LABELLED)) == 0.0
    # the pseudo-label's probability -> 0: noise that always picks class 0, whose logit -> -inf
    low = logits.clone()
    low[:, 0] = -40.0
    pick_zero = torch.zeros(10, 6, dtype=F64)
    pick_zero[:, 0] = 1e3
    assert float(csp_loss(low, pick_zero, voted, ~LABELLED)) < 1e-12


def test_entropy_is_log_k_for_a_uniform_mean_and_matches_the_reference() -> None:
    assert math.isclose(float(mean_entropy(torch.zeros(4, 7, dtype=F64))), math.log(7))
    swapped = 5.0 * torch.eye(6, dtype=F64)  # confident rows, uniform mean
    assert math.isclose(float(mean_entropy(swapped)), math.log(6), abs_tol=1e-12)
    logits = draw(10, 6)
    assert math.isclose(float(mean_entropy(logits)), slow_entropy(logits), abs_tol=1e-12)


def test_gradients_match_finite_differences() -> None:
    logits = draw(10, 6).requires_grad_()
    gumbel = draw(10, 6, seed=4)
    voted = torch.tensor([0, 0, 0, 0, 1, 0, 1, 1, 0, 1], dtype=torch.bool)
    partner = torch.tensor([2, 4, 0, 3, 1, 2, 6, 9, 8, 7])
    checks = {
        "mce": lambda x: margin_cross_entropy(x, LABELS, LABELLED, 0.2),
        "glv": lambda x: glv_loss(x, partner),
        "entropy": mean_entropy,
    }
    for name, fn in checks.items():
        assert torch.autograd.gradcheck(fn, (logits,)), name
    # L_CSP: the pseudo-labels are a stop-gradient (finite differences would move them), so its
    # gradient is checked against the same formula with the pseudo-labels held fixed
    fixed = csp_with_fixed_targets(logits.detach(), gumbel, voted, ~LABELLED)
    assert torch.autograd.gradcheck(fixed, (logits,))
    (got,) = torch.autograd.grad(csp_loss(logits, gumbel, voted, ~LABELLED), logits)
    (want,) = torch.autograd.grad(fixed(logits), logits)
    torch.testing.assert_close(got, want, **TOL)
    # L_GLV's gradient reaches the partner as well (the code's prob[pos_pairs] is not detached)
    (grad,) = torch.autograd.grad(glv_loss(logits, torch.tensor([1] * 10)), logits)
    assert grad[1].abs().sum() > 0 and grad[0].abs().sum() > 0
