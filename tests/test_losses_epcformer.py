"""EPCFormer's losses beyond the conformance cases (tests/conformance/cases_epcformer.py): the
spec's EA properties (symmetric under swapping the towers, ~0 for aligned one-hot features at a
small temperature), the focal loss's limits and the Dice loss's extremes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modules.losses.epcformer import dice_loss, expression_alignment_loss, sigmoid_focal_loss


def test_alignment_is_symmetric_in_the_two_expressions() -> None:
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=1)
    t = F.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=1)
    ids = torch.tensor([0, 1, 0, 2, 3, 1])
    assert torch.allclose(
        expression_alignment_loss(a, t, 14.3, ids), expression_alignment_loss(t, a, 14.3, ids)
    )


def test_alignment_vanishes_for_aligned_one_hot_features_at_small_temperature() -> None:
    one_hot = torch.eye(4, dtype=torch.float64)
    assert expression_alignment_loss(one_hot, one_hot.clone(), 100.0) < 1e-30
    shuffled = one_hot[[1, 0, 3, 2]]
    assert expression_alignment_loss(one_hot, shuffled, 100.0) > 50


def test_alignment_with_repeated_expressions_is_floored_at_log_of_the_positives() -> None:
    """Two items saying the same thing, aligned: the target is uniform over both, so the loss
    is log 2 however small the temperature (not the diagonal's ~0)."""
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    loss = expression_alignment_loss(x, x.clone(), 100.0, torch.tensor([7, 7]))
    assert torch.isclose(loss, torch.log(torch.tensor(2.0, dtype=torch.float64)))


def test_focal_without_focusing_and_weighting_is_binary_cross_entropy() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 4, generator=g)
    target = (torch.rand(3, 4, 4, generator=g) < 0.3).float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    assert torch.isclose(sigmoid_focal_loss(logits, target, alpha=-1, gamma=0.0), bce)
    # focusing only lowers each pixel's loss
    assert sigmoid_focal_loss(logits, target, alpha=-1, gamma=2.0) < bce


def test_dice_is_zero_for_a_confident_exact_mask_and_one_for_a_disjoint_one() -> None:
    target = torch.zeros(2, 8, 8)
    target[:, 2:5, 3:6] = 1
    exact = (target * 2 - 1) * 50
    assert dice_loss(exact, target) < 1e-3
    # all wrong: only the +1 smoothing is left, 1 / (55 background + 9 target + 1)
    assert dice_loss(-exact, target).item() == pytest.approx(1 - 1 / 65, abs=1e-6)
