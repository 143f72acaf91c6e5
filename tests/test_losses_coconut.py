"""COCONUT's NSPT and multimodal supervised contrastive losses against slow references written
from the formulas of modules/losses/coconut.py (loops over anchors, positives, negatives)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from modules.losses.coconut import multimodal_supcon_loss, nspt_loss

F64 = torch.float64


def slow_nspt(student, teacher, labels, rehearsal, temperature):
    """Mean over rehearsal anchors i of -(1/|P|) sum_p log e^{z_i.t_p/T} / (sum_{a in P}
    e^{z_i.t_a/T} + sum_{n in R, y_n != y_i} e^{z_i.z_n/T})."""
    n = len(labels)
    anchors = [i for i in range(n) if rehearsal[i]]
    if not anchors:
        return torch.zeros((), dtype=student.dtype)
    total = 0.0
    for i in anchors:
        pos = [p for p in range(n) if rehearsal[p] and labels[p] == labels[i]]
        neg = [m for m in range(n) if rehearsal[m] and labels[m] != labels[i]]
        denominator = sum(torch.exp(student[i] @ teacher[a] / temperature) for a in pos)
        denominator = denominator + sum(
            torch.exp(student[i] @ student[m] / temperature) for m in neg
        )
        row = 0.0
        for p in pos:
            row = row - torch.log(torch.exp(student[i] @ teacher[p] / temperature) / denominator)
        total = total + row / len(pos)
    return total / len(anchors)


def slow_mm(audio, text, labels, new, scale):
    """1/2 of the audio->text and text->audio multi-positive InfoNCE over the new rows."""
    rows = [i for i in range(len(labels)) if new[i]]
    if not rows:
        return torch.zeros((), dtype=audio.dtype)
    loss = 0.0
    for a, b in ((audio, text), (text, audio)):
        direction = 0.0
        for i in rows:
            logits = torch.stack([scale * a[i] @ b[j] for j in rows])
            log_prob = logits - torch.logsumexp(logits, dim=0)
            positives = [k for k, j in enumerate(rows) if labels[j] == labels[i]]
            direction = direction - sum(log_prob[k] for k in positives) / len(positives)
        loss = loss + 0.5 * direction / len(rows)
    return loss


def batch(n=10, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(n, d, generator=g, dtype=F64), dim=1)
    t = F.normalize(torch.randn(n, d, generator=g, dtype=F64), dim=1)
    e = F.normalize(torch.randn(n, d, generator=g, dtype=F64), dim=1)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3, 3, 2, 1])[:n]
    rehearsal = torch.tensor([1, 1, 0, 1, 0, 1, 0, 1, 1, 0], dtype=torch.bool)[:n]
    return z, t, e, labels, rehearsal


def test_nspt_matches_the_slow_reference():
    z, t, _, labels, rehearsal = batch()
    expected = slow_nspt(z, t, labels, rehearsal, 0.1)
    assert torch.allclose(nspt_loss(z, t, labels, rehearsal, 0.1), expected, atol=1e-10)


def test_mm_matches_the_slow_reference():
    z, _, e, labels, rehearsal = batch()
    expected = slow_mm(z, e, labels, ~rehearsal, 7.0)
    assert torch.allclose(multimodal_supcon_loss(z, e, labels, ~rehearsal, 7.0), expected)


def test_without_rehearsal_samples_nspt_is_zero_and_mm_without_new_ones():
    z, t, e, labels, _ = batch()
    none = torch.zeros(len(labels), dtype=torch.bool)
    z.requires_grad_(True)
    loss = nspt_loss(z, t, labels, none, 0.1)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))
    assert multimodal_supcon_loss(z, e, labels, none, 7.0).item() == 0.0


def test_the_teacher_gets_no_gradient_and_the_student_does():
    z, t, _, labels, rehearsal = batch()
    z.requires_grad_(True)
    t.requires_grad_(True)
    nspt_loss(z, t, labels, rehearsal, 0.1).backward()
    assert t.grad is None
    assert z.grad[rehearsal].abs().sum() > 0


def test_new_samples_do_not_enter_nspt_nor_rehearsal_samples_mm():
    z, t, e, labels, rehearsal = batch()
    moved_z, moved_t, moved_e = z.clone(), t.clone(), e.clone()
    moved_z[~rehearsal] = -moved_z[~rehearsal]
    moved_t[~rehearsal] = -moved_t[~rehearsal]
    assert torch.allclose(
        nspt_loss(moved_z, moved_t, labels, rehearsal, 0.1), nspt_loss(z, t, labels, rehearsal, 0.1)
    )
    moved_z, moved_e = z.clone(), e.clone()
    moved_z[rehearsal], moved_e[rehearsal] = -z[rehearsal], -e[rehearsal]
    assert torch.allclose(
        multimodal_supcon_loss(moved_z, moved_e, labels, ~rehearsal, 7.0),
        multimodal_supcon_loss(z, e, labels, ~rehearsal, 7.0),
    )


def test_a_same_intent_student_is_never_a_negative():
    """Two rehearsal samples of one intent and nothing else: no negatives, so each anchor's
    term is the SupCon of its student against the two teacher positives only, with no
    student-student similarity anywhere."""
    t = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=F64), dim=1)
    s = F.normalize(torch.tensor([[1.0, 0.2], [-0.9, 0.1]], dtype=F64), dim=1)
    labels, both = torch.tensor([4, 4]), torch.tensor([True, True])

    def row(anchor):
        logits = t @ anchor / 0.5
        return -(logits - torch.logsumexp(logits, dim=0)).mean()

    expected = 0.5 * (row(s[0]) + row(s[1]))
    assert torch.allclose(nspt_loss(s, t, labels, both, 0.5), expected, atol=1e-12)
    # the limit of perfect agreement with identical positives: loss = log |P|
    same = nspt_loss(t[:1].expand(2, 2), t[:1].expand(2, 2), labels, both, 0.5)
    assert math.isclose(same.item(), math.log(2), rel_tol=1e-12)


def test_gradients_match_the_reference():
    z, t, e, labels, rehearsal = batch(seed=3)
    z1, z2 = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    nspt_loss(z1, t, labels, rehearsal, 0.2).backward()
    slow_nspt(z2, t, labels, rehearsal, 0.2).backward()
    assert torch.allclose(z1.grad, z2.grad, atol=1e-10)
    e1, e2 = e.clone().requires_grad_(True), e.clone().requires_grad_(True)
    multimodal_supcon_loss(z, e1, labels, ~rehearsal, 5.0).backward()
    slow_mm(z, e2, labels, ~rehearsal, 5.0).backward()
    assert torch.allclose(e1.grad, e2.grad, atol=1e-10)
