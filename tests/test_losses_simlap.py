"""SimLAP's gated loss (modules/losses/simlap.py) against a slow per-(anchor, candidate) loop
written from the spec (methods/part1.md section 22), and its unit tests there: with g = 1 and
y2 = y1 it is SupCon with per-positive denominators (and, with one class per scene and two
views, half of NT-Xent plus the anchor's own term); classes y1 and y2 are never negatives; the
gate acts per anchor; gradients. The 2-process cases are tests/conformance/cases_simlap.py."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.losses.simclr import nt_xent_loss
from modules.losses.simlap import simlap_loss

F64 = torch.float64
TOL = dict(rtol=0.0, atol=1e-12)
#: two labelings in one label space: classes 0-2 and 3-4
LABELS = torch.tensor([[0, 3], [1, 4], [2, 3], [0, 4], [1, 3], [2, 4], [0, 3], [1, 4]])
Y1 = torch.tensor([0, 4, 2, 4, 1, 2, 3, 1])  # each anchor's label under its drawn labeling
Y2 = torch.tensor([1, 3, 2, 4, 0, 1, 4, 2])  # its pair class, same labeling


def draw(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def slow_simlap(z, candidates, gates, y1, y2, labels, scale) -> Tensor:
    """Spec, literally: u_a = norm(z_a g_a), u_ab = norm(z_b g_a), l_ab = scale <u_a, u_ab>,
    P_a = {b : y2(a) in labels(b)}, N_a = {b : labels(b) meet neither y1(a) nor y2(a)}, and
    L = sum_a sum_{p in P_a} [log(e^{l_ap} + sum_{n in N_a} e^{l_an}) - l_ap] / sum_a |P_a|."""
    labels = labels if labels.ndim == 2 else labels[:, None]
    total, count = 0.0, 0
    for a in range(z.shape[0]):
        u_a = F.normalize(z[a] * gates[a], dim=0)
        logit = [
            scale * torch.dot(u_a, F.normalize(candidates[b] * gates[a], dim=0))
            for b in range(candidates.shape[0])
        ]
        classes = [set(row.tolist()) for row in labels]
        positives = [b for b, c in enumerate(classes) if int(y2[a]) in c]
        negatives = [b for b, c in enumerate(classes) if not c & {int(y1[a]), int(y2[a])}]
        for p in positives:
            denominator = torch.exp(logit[p]) + sum(torch.exp(logit[n]) for n in negatives)
            total = total + torch.log(denominator) - logit[p]
            count += 1
    return total / count


def slow_per_positive_supcon(z, ids, scale) -> Tensor:
    """SupCon with one denominator per positive (the positive and the other classes), every
    sample an anchor and a candidate, itself included: -1/sum|P| sum_a sum_{p: ids equal}
    log(e^{s_ap} / (e^{s_ap} + sum_{k: ids differ} e^{s_ak})), s = scale cos."""
    u = F.normalize(z, dim=1)
    terms = []
    for a in range(len(ids)):
        others = sum(torch.exp(scale * u[a] @ u[k]) for k in range(len(ids)) if ids[k] != ids[a])
        for p in range(len(ids)):
            if ids[p] == ids[a]:
                s = scale * u[a] @ u[p]
                terms.append(-torch.log(torch.exp(s) / (torch.exp(s) + others)))
    return torch.stack(terms).mean()


def test_equals_the_slow_loop_value_and_gradients():
    z = draw(8, 5, seed=0).requires_grad_()
    c = draw(8, 5, seed=1).requires_grad_()
    gates = torch.sigmoid(draw(8, 5, seed=2)).requires_grad_()
    for labels in (LABELS, LABELS[:, 0]):
        y1, y2 = (Y1, Y2) if labels.ndim == 2 else (LABELS[:, 0], Y2 % 3)
        got = simlap_loss(z, c, gates, y1, y2, labels, 10.0)
        want = slow_simlap(z, c, gates, y1, y2, labels, 10.0)
        torch.testing.assert_close(got, want, **TOL)
        for g, w in zip(
            torch.autograd.grad(got, (z, c, gates)),
            torch.autograd.grad(want, (z, c, gates)),
            strict=True,
        ):
            torch.testing.assert_close(g, w, rtol=0.0, atol=1e-10)


def test_open_gate_and_identical_pairs_is_per_positive_supcon():
    z = draw(10, 4, seed=3)
    ids = torch.tensor([0, 1, 2, 0, 1, 2, 0, 3, 3, 1])
    ones = torch.ones_like(z)
    got = simlap_loss(z, z, ones, ids, ids, ids, 1 / 0.1)
    torch.testing.assert_close(got, slow_per_positive_supcon(z, ids, 1 / 0.1), **TOL)


def test_one_class_per_scene_is_half_nt_xent_plus_the_anchor_itself():
    """Two views, every scene its own class, g = 1, y2 = y1: each anchor has two positives, its
    other view (the NT-Xent term: its denominator is the positive and the other scenes) and
    itself (log(1 + sum_n e^{l_an - scale})), so the loss is their mean."""
    a, b = F.normalize(draw(6, 4, seed=4), dim=1), F.normalize(draw(6, 4, seed=5), dim=1)
    z, ids, scale = torch.cat([a, b]), torch.arange(6).repeat(2), 5.0
    got = simlap_loss(z, z, torch.ones_like(z), ids, ids, ids, scale)
    logits = scale * z @ z.T
    other = ids[:, None] != ids[None, :]
    itself = torch.log1p((torch.exp(logits - scale) * other).sum(1)).mean()
    torch.testing.assert_close(got, (nt_xent_loss(a, b, scale) + itself) / 2, **TOL)


def test_classes_y1_and_y2_are_never_negatives():
    """One anchor of class 0 paired with class 1: candidates of class 0 get no gradient (they
    are neither positives nor negatives), the class-1 candidates are positives only (moving
    one changes only its own term), a class-2 candidate is a negative."""
    labels = torch.tensor([0, 0, 1, 1, 2])
    c = draw(5, 4, seed=6).requires_grad_()
    z, gates = draw(1, 4, seed=7), torch.sigmoid(draw(1, 4, seed=8))
    loss = simlap_loss(z, c, gates, torch.tensor([0]), torch.tensor([1]), labels, 10.0)
    (grad,) = torch.autograd.grad(loss, c)
    assert grad[:2].abs().max() == 0
    assert grad[4].abs().max() > 0
    # the other positive's features do not enter positive 2's term: a two-positive loss is
    # the mean of the two one-positive losses
    single = [
        simlap_loss(z, c[[p, 4]], gates, torch.tensor([0]), torch.tensor([1]), labels[[p, 4]], 10.0)
        for p in (2, 3)
    ]
    torch.testing.assert_close(loss, sum(single) / 2, **TOL)


def test_the_gate_selects_the_subspace_per_anchor():
    """A gate that closes every dimension but the first makes the loss see the first
    coordinate alone (the candidates are gated with the anchor's gate, not their own)."""
    z, c = draw(4, 3, seed=9), draw(6, 3, seed=10)
    labels, y1, y2 = (
        torch.tensor([0, 1, 2, 0, 1, 2]),
        torch.tensor([0, 1, 2, 0]),
        torch.tensor([1, 2, 0, 0]),
    )
    first = torch.tensor([1.0, 1e-9, 1e-9], dtype=F64).expand(4, 3)
    got = simlap_loss(z, c, first, y1, y2, labels, 10.0)
    want = simlap_loss(z[:, :1], c[:, :1], torch.ones(4, 1, dtype=F64), y1, y2, labels, 10.0)
    torch.testing.assert_close(got, want, rtol=0.0, atol=1e-6)
    # invariant to a positive scale of a feature row or of an anchor's gate
    scaled = simlap_loss(3 * z, c * 0.5, first * 7, y1, y2, labels, 10.0)
    torch.testing.assert_close(scaled, got, **TOL)


def test_anchor_without_negatives_and_no_positive_at_all_stay_finite():
    z = draw(2, 3, seed=11).requires_grad_()
    labels = torch.tensor([0, 1])  # pairs (0, 1) and (1, 0): no candidate is a negative
    loss = simlap_loss(z, z, torch.ones_like(z), torch.tensor([0, 1]), torch.tensor([1, 0]), labels)
    (grad,) = torch.autograd.grad(loss, z)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert abs(loss.item()) < 1e-12  # every positive alone in its softmax: log 1
    none = simlap_loss(z, z, torch.ones_like(z), torch.tensor([0, 1]), torch.tensor([2, 2]), labels)
    assert none.item() == 0 and none.requires_grad
    assert math.isfinite(none.item())
