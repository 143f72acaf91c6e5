"""ArcFace/CosFace margin softmax: the m = 0 limit and the fallback that keeps the target logit
decreasing (and its gradient finite) near θ = π (the slow per-element reference, gradcheck and
DDP are in the conformance kit: tests/conformance/cases_metric_learning.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modules.losses.metric_learning import margin_logits, margin_softmax_loss


def data(seed: int = 0, rows: int = 6, classes: int = 4, dim: int = 5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, dim, generator=g, dtype=torch.float64)
    w = torch.randn(classes, dim, generator=g, dtype=torch.float64)
    y = torch.randint(classes, (rows,), generator=g)
    return x, w, y


@pytest.mark.parametrize("kind", ["arc", "cos"])
def test_zero_margin_is_the_scaled_cosine_softmax(kind):
    x, w, y = data()
    cosine = F.normalize(x, dim=1) @ F.normalize(w, dim=1).T
    torch.testing.assert_close(
        margin_softmax_loss(x, w, y, 30.0, 0.0, kind), F.cross_entropy(30.0 * cosine, y)
    )


def test_margin_makes_the_loss_larger_and_touches_only_the_target_logit():
    x, w, y = data(seed=2)
    assert (
        margin_softmax_loss(x, w, y, 10.0, 0.3).item()
        > margin_softmax_loss(x, w, y, 10.0, 0.0).item()
    )
    cosine = F.normalize(x, dim=1) @ F.normalize(w, dim=1).T
    changed = margin_logits(cosine, y, 0.3) != cosine
    assert torch.equal(changed, F.one_hot(y, len(w)).bool())


def test_target_logit_decreases_in_theta_and_gradients_stay_finite_at_the_poles():
    m = 0.5
    theta = torch.linspace(0.0, math.pi, 2001, dtype=torch.float64)
    cosine = theta.cos()[:, None]
    labels = torch.zeros(len(theta), dtype=torch.long)
    target = margin_logits(cosine, labels, m)[:, 0]
    assert bool((target[1:] <= target[:-1]).all())  # wrapping round would rise again past π - m
    # exactly at cos = ±1 (θ = 0 and θ = π) the gradient is finite, not NaN/inf
    poles = torch.tensor([[1.0], [-1.0]], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(
        margin_logits(poles, torch.zeros(2, dtype=torch.long), m).sum(), poles
    )
    assert torch.isfinite(grad).all()
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    margin_softmax_loss(x, w, torch.tensor([0, 0]), 30.0, m).backward()
    assert torch.isfinite(x.grad).all()


def test_unknown_margin_kind_is_rejected():
    x, w, y = data()
    with pytest.raises(ValueError, match="margin kind"):
        margin_softmax_loss(x, w, y, 1.0, 0.1, "sphere")
