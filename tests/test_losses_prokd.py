"""ProKD's losses (modules/losses/prokd.py) against loop references, limits and invariances."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modules.losses.prokd import (
    class_means,
    distillation_mse,
    prototype_alignment,
    prototype_weights,
    rectified_labels,
)

F64 = torch.float64


def slow_class_means(features, labels, num_classes):
    """Per-class means by a loop over classes and tokens."""
    means = torch.zeros(num_classes, features.shape[1], dtype=features.dtype)
    counts = torch.zeros(num_classes, dtype=features.dtype)
    for k in range(num_classes):
        rows = [features[i] for i in range(len(labels)) if int(labels[i]) == k]
        counts[k] = len(rows)
        if rows:
            means[k] = torch.stack(rows).mean(0)
    return means, counts


def slow_alignment(source, target, valid, temperature):
    """L_PA by loops: per valid class, -log of its positive's share, both directions."""
    classes = [k for k in range(len(valid)) if valid[k]]
    if len(classes) < 2:
        return torch.zeros((), dtype=source.dtype)

    def cos(a, b):
        return torch.dot(a, b) / (a.norm() * b.norm())

    total = 0.0
    for a, b in ((source, target), (target, source)):
        for k in classes:
            scores = [cos(a[k], b[j]) / temperature for j in classes]
            total = total - (scores[classes.index(k)] - torch.logsumexp(torch.stack(scores), 0))
    return total / (2 * len(classes))


def slow_alignment_loss(source_features, source_labels, target_features, target_labels, k, tau):
    """The whole teacher term from the loop references (the conformance case's reference)."""
    s, s_n = slow_class_means(source_features, source_labels, k)
    t, t_n = slow_class_means(target_features, target_labels, k)
    return slow_alignment(s, t, (s_n > 0) & (t_n > 0), tau)


def test_class_means_match_the_loop_and_ignore_negative_labels():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(10, 3, generator=g, dtype=F64)
    labels = torch.tensor([0, 2, 2, -1, 0, 3, -2, 2, 0, 3])
    means, counts = class_means(features, labels, 5)
    slow, slow_counts = slow_class_means(features, labels, 5)
    torch.testing.assert_close(means, slow)
    torch.testing.assert_close(counts, slow_counts)
    assert counts.tolist() == [3, 0, 3, 2, 0]


def test_alignment_matches_the_loop_and_has_its_gradient():
    g = torch.Generator().manual_seed(1)
    source = torch.randn(5, 4, generator=g, dtype=F64, requires_grad=True)
    target = torch.randn(5, 4, generator=g, dtype=F64, requires_grad=True)
    valid = torch.tensor([True, True, False, True, True])
    loss = prototype_alignment(source, target, valid, 0.3)
    reference = slow_alignment(source, target, valid, 0.3)
    torch.testing.assert_close(loss, reference)
    grads = torch.autograd.grad(loss, (source, target))
    expected = torch.autograd.grad(reference, (source, target))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)
    assert grads[0][2].abs().sum() == 0  # an invalid class takes no part


def test_alignment_vanishes_for_matched_orthogonal_prototypes_as_tau_goes_to_zero():
    prototypes = torch.eye(4, dtype=F64)
    valid = torch.ones(4, dtype=torch.bool)
    values = [
        float(prototype_alignment(prototypes, prototypes, valid, t)) for t in (1.0, 0.1, 0.01)
    ]
    assert values[0] > values[1] > values[2] and values[2] < 1e-40
    # matched prototypes at tau = 1: -log(e / (e + 3))
    assert values[0] == pytest.approx(-math.log(math.e / (math.e + 3)))


def test_alignment_is_invariant_to_a_joint_relabelling_of_classes():
    g = torch.Generator().manual_seed(2)
    source, target = (
        torch.randn(6, 3, generator=g, dtype=F64),
        torch.randn(6, 3, generator=g, dtype=F64),
    )
    valid = torch.tensor([True, False, True, True, True, True])
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    torch.testing.assert_close(
        prototype_alignment(source[perm], target[perm], valid[perm], 0.2),
        prototype_alignment(source, target, valid, 0.2),
    )


def test_alignment_with_fewer_than_two_classes_is_zero_with_a_graph():
    source = torch.randn(3, 2, dtype=F64, requires_grad=True)
    loss = prototype_alignment(source, source.detach(), torch.tensor([False, True, False]), 0.1)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert source.grad is not None and source.grad.abs().sum() == 0


def test_prototype_weights_and_rectified_labels_by_hand():
    prototypes = torch.tensor([[0.0, 0.0], [3.0, 4.0], [9.0, 9.0]], dtype=F64)
    features = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=F64)
    valid = torch.tensor([True, True, False])
    weights = prototype_weights(features, prototypes, valid, 1.0)
    # distances 0 and 5 to the valid prototypes; the invalid one weighs 0
    e5 = math.exp(-5)
    expected = torch.tensor(
        [[1 / (1 + e5), e5 / (1 + e5), 0.0], [e5 / (1 + e5), 1 / (1 + e5), 0.0]]
    )
    torch.testing.assert_close(weights, expected.to(F64))
    # the teacher prefers class 0 for both tokens; the second token sits on prototype 1
    teacher = torch.tensor([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1]], dtype=F64)
    assert rectified_labels(teacher, weights).tolist() == [0, 1]
    # uniform weights (no prototypes) keep the teacher's argmax
    assert rectified_labels(teacher, torch.ones_like(teacher)).tolist() == [0, 0]


def test_distillation_mse_by_hand():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]], dtype=F64)
    teacher = torch.tensor([[1.0, 0.0], [0.75, 0.25]], dtype=F64)
    # softmax rows: [0.5, 0.5] and [0.75, 0.25]
    torch.testing.assert_close(
        distillation_mse(logits, teacher), torch.tensor([0.25, 0.0], dtype=F64)
    )
    student = F.softmax(logits, -1)
    assert torch.allclose(student[1], teacher[1])
