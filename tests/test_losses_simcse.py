"""SimCSE's loss (modules/losses/simcse.py) against a slow loop reference of Eq. 4 / Eq. 5."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modules.losses.simcse import simcse_loss


def slow_loss(anchor, positive, logit_scale, hard_negative=None, hard_negative_weight=0.0):
    """Eq. 4 / 5 written per anchor: -log of its positive's share of every candidate."""
    total = anchor.new_zeros(())
    for i in range(len(anchor)):
        candidates = [logit_scale * (anchor[i] @ p) for p in positive]
        if hard_negative is not None:
            candidates += [
                logit_scale * (anchor[i] @ n) + (hard_negative_weight if j == i else 0.0)
                for j, n in enumerate(hard_negative)
            ]
        logits = torch.stack(candidates)
        total = total - (logits[i] - torch.logsumexp(logits, 0))
    return total / len(anchor)


def unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("weight", [0.0, 1.5])
def test_matches_the_slow_reference(weight):
    a, p, n = unit(6, 5, seed=1), unit(6, 5, seed=2), unit(6, 5, seed=3)
    torch.testing.assert_close(simcse_loss(a, p, 20.0), slow_loss(a, p, 20.0), atol=1e-12, rtol=0)
    torch.testing.assert_close(
        simcse_loss(a, p, 20.0, n, weight), slow_loss(a, p, 20.0, n, weight), atol=1e-12, rtol=0
    )


def test_one_direction_only():
    """Anchors against positives, not the reverse: swapping the roles changes the value."""
    a, p = unit(5, 4, seed=4), unit(5, 4, seed=5)
    assert not torch.isclose(simcse_loss(a, p, 10.0), simcse_loss(p, a, 10.0))


def test_limits():
    """Identical views far apart from each other: loss -> 0 as tau -> 0; at scale 0 every
    candidate is equally likely: log(B) (and log(2B) with hard negatives)."""
    eye = torch.eye(4, dtype=torch.float64)
    assert simcse_loss(eye, eye, 1000.0) < 1e-12
    a, p, n = unit(4, 3, seed=6), unit(4, 3, seed=7), unit(4, 3, seed=8)
    assert math.isclose(simcse_loss(a, p, 0.0).item(), math.log(4))
    assert math.isclose(simcse_loss(a, p, 0.0, n).item(), math.log(8))


def test_a_hard_negative_equal_to_the_positive_costs_log_2():
    """With the contradiction identical to the entailment and the other columns far away, each
    anchor splits its mass between two equal logits."""
    eye = torch.eye(4, dtype=torch.float64)
    assert math.isclose(simcse_loss(eye, eye, 1000.0, eye).item(), math.log(2), rel_tol=1e-9)


def test_gradients():
    a, p, n = (unit(4, 3, seed=s).requires_grad_() for s in (9, 10, 11))
    assert torch.autograd.gradcheck(lambda a, p, n: simcse_loss(a, p, 7.0, n, 0.5), (a, p, n))


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="same shape"):
        simcse_loss(unit(4, 3), unit(5, 3), 1.0)
