"""ALIGN's summed loss and the contrastive-gap regularisers (CUA/CUAXU) against the spec's worked
example, and their invariances (pair-by-pair references, gradients and DDP are in the
conformance kit: tests/conformance/cases_contrastive_gap.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modules.losses.contrastive import align_loss, clip_loss
from modules.losses.contrastive_gap import (
    alignment,
    cross_modal_uniformity,
    in_modal_uniformity,
    uniformity,
)


def unit(rows: int, dim: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=g, dtype=torch.float64), dim=1)


def test_spec_example_orthonormal_pairs():
    x = torch.eye(2, dtype=torch.float64)
    y = x.clone()
    assert alignment(x, y).item() == 0.0
    assert cross_modal_uniformity(x, y).item() == pytest.approx(-4.0)
    assert in_modal_uniformity(x, y).item() == pytest.approx(-4.0)
    # the wrong version with the diagonal pairs included would give log((2 + 2e^-4) / 4)
    assert cross_modal_uniformity(x, y).item() != pytest.approx(
        math.log((2 + 2 * math.exp(-4)) / 4)
    )


def test_invariances_and_finite_gradients_at_coincident_embeddings():
    x, y = unit(5, seed=3), unit(5, seed=4)
    perm = torch.tensor([3, 0, 4, 1, 2])
    rotation, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    for fn in (in_modal_uniformity, cross_modal_uniformity, alignment):
        value = fn(x, y)
        torch.testing.assert_close(fn(x[perm], y[perm]), value)  # pairs permuted together
        torch.testing.assert_close(fn(x @ rotation, y @ rotation), value)  # rotations
    torch.testing.assert_close(cross_modal_uniformity(y, x), cross_modal_uniformity(x, y))
    same = x.clone().requires_grad_()
    loss = in_modal_uniformity(same, same) + cross_modal_uniformity(same, same)
    (grad,) = torch.autograd.grad(loss + uniformity(torch.cat([same, same])), same)
    assert torch.isfinite(grad).all()  # pdist/cdist would give NaN at zero distance


def test_align_sum_is_twice_the_averaged_clip_loss_and_symmetric():
    x, y = unit(6, seed=5), unit(6, seed=6)
    ids = torch.tensor([0, 1, 1, 2, 3, 4])
    scale = torch.tensor(1 / 0.05, dtype=torch.float64)
    summed = align_loss(x, y, scale, ids, label_smoothing=0.1)
    torch.testing.assert_close(summed, 2 * clip_loss(x, y, scale, ids, 0.1))
    torch.testing.assert_close(align_loss(x, y, scale, reduction="mean"), clip_loss(x, y, scale))
    torch.testing.assert_close(align_loss(y, x, scale, ids), align_loss(x, y, scale, ids))
    torch.testing.assert_close(
        align_loss(x, y, scale, ids, block_elements=4), align_loss(x, y, scale, ids)
    )
    with pytest.raises(ValueError, match="reduction"):
        align_loss(x, y, scale, reduction="max")


def test_align_with_aligned_orthonormal_embeddings_and_small_temperature_is_near_zero():
    x = torch.eye(4, dtype=torch.float64)
    assert align_loss(x, x.clone(), torch.tensor(1 / 0.01, dtype=torch.float64)).item() < 1e-3
