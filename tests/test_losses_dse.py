"""DSE's loss (modules/losses/dse.py) against methods/part2.md Sec. 36's unit test and slow
references written from the official code's formulas: the squared error summed over the logits
(3.0, not 1.0, for a difference of (1, 1, 1)), the convex combination with the task loss, the
pair feature's blocks and symmetry, the binary reduction of a two-class teacher, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from modules.losses.dse import (
    binary_teacher_logit,
    distillation_loss,
    dse_terms,
    pair_features,
    task_loss,
)

F64 = torch.float64


def slow_distillation(student, teacher):
    """(1/B) sum_b sum_c (z_s - z_t)^2, one pair at a time."""
    total = 0.0
    for b in range(student.shape[0]):
        total += sum((student[b, c] - teacher[b, c]) ** 2 for c in range(student.shape[1]))
    return total / student.shape[0]


def slow_bce(logits, labels):
    """-(1/B) sum_b [y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))], one pair at a time."""
    total = 0.0
    for z, y in zip(logits[:, 0].tolist(), labels.tolist(), strict=True):
        p = 1.0 / (1.0 + math.exp(-z))
        total -= y * math.log(p) + (1 - y) * math.log(1 - p)
    return total / len(labels)


def test_distillation_sums_over_logits_as_the_spec_unit_test():
    teacher = torch.randn(4, 3, dtype=F64)
    assert distillation_loss(teacher + 1.0, teacher).item() == pytest.approx(3.0)
    assert distillation_loss(teacher.clone(), teacher).item() == 0.0
    terms = dse_terms(teacher + 1.0, torch.zeros(4, dtype=torch.long), teacher, alpha=1.0)
    assert terms["distillation"].item() == pytest.approx(3.0)
    assert terms["task"].item() == 0.0


def test_terms_match_the_slow_reference_for_a_binary_task():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(6, 1, generator=g, dtype=F64)
    teacher = torch.randn(6, 1, generator=g, dtype=F64)
    labels = torch.tensor([1, 0, 1, 1, 0, 0])
    for alpha in (0.0, 0.3, 0.5, 1.0):
        terms = dse_terms(student, labels, teacher, alpha)
        assert terms["task"].item() == pytest.approx((1 - alpha) * slow_bce(student, labels))
        want = alpha * slow_distillation(student, teacher).item()
        assert terms["distillation"].item() == pytest.approx(want)


def test_multiclass_task_is_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=F64)
    labels = torch.tensor([0, 2])
    want = -(torch.log_softmax(logits, 1)[0, 0] + torch.log_softmax(logits, 1)[1, 2]) / 2
    assert task_loss(logits, labels).item() == pytest.approx(want.item())


def test_gradient_reaches_the_student_only():
    student = torch.randn(5, 2, dtype=F64, requires_grad=True)
    teacher = torch.randn(5, 2, dtype=F64, requires_grad=True)
    distillation_loss(student, teacher).backward()
    torch.testing.assert_close(student.grad, 2 * (student - teacher).detach() / 5)
    assert teacher.grad is None


def test_alpha_zero_needs_no_teacher_and_alpha_above_zero_does():
    student, labels = torch.randn(4, 1), torch.tensor([1, 0, 1, 0])
    terms = dse_terms(student, labels, None, 0.0)
    assert terms["distillation"].item() == 0.0
    with pytest.raises(ValueError, match="teacher"):
        dse_terms(student, labels, None, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        dse_terms(student, labels, None, 1.5)


def test_pair_feature_blocks_and_their_symmetry():
    u, v = torch.randn(3, 5), torch.randn(3, 5)
    h, swapped = pair_features(u, v), pair_features(v, u)
    assert h.shape == (3, 20)
    torch.testing.assert_close(h[:, :5], u)
    torch.testing.assert_close(h[:, 5:10], v)
    torch.testing.assert_close(h[:, 10:15], u * v)
    torch.testing.assert_close(h[:, 15:], (u - v).abs())
    torch.testing.assert_close(h[:, 10:], swapped[:, 10:])  # u*v and |u-v|: symmetric
    torch.testing.assert_close(h[:, :5], swapped[:, 5:10])


def test_binary_teacher_logit_keeps_the_teacher_probability():
    logits = torch.randn(7, 2, dtype=F64)
    z = binary_teacher_logit(logits)
    assert z.shape == (7, 1)
    torch.testing.assert_close(torch.sigmoid(z[:, 0]), torch.softmax(logits, 1)[:, 1])
    with pytest.raises(ValueError, match="two-class"):
        binary_teacher_logit(torch.randn(7, 3))
