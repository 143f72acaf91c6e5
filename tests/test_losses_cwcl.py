"""CWCL's continuously weighted loss: its limits (identity weights, one-hot directions = CLIP)
and invariances (the slow reference, the frozen reference tower's missing gradient, gradcheck and
DDP are in the conformance kit: tests/conformance/cases_cwcl.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modules.losses.contrastive import clip_loss
from modules.losses.cwcl import continuous_weights, cwcl_loss, row_normalised


def unit(rows: int, dim: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=g, dtype=torch.float64), dim=1)


SCALE = torch.tensor(1 / 0.07, dtype=torch.float64)


def test_identity_weights_and_one_hot_directions_are_clip_exactly():
    p, q = unit(6, seed=3), unit(6, seed=4)
    identity = torch.eye(6, dtype=torch.float64)
    torch.testing.assert_close(cwcl_loss(p, q, SCALE, weights=identity), clip_loss(p, q, SCALE))
    ids = torch.tensor([0, 1, 1, 2, 3, 4])
    torch.testing.assert_close(
        cwcl_loss(p, q, SCALE, ids, trained_to_reference="one_hot", reference_to_trained="one_hot"),
        clip_loss(p, q, SCALE, ids),
    )
    # and the continuous weights really differ from the identity: a wrong loss ignoring them fails
    assert cwcl_loss(p, q, SCALE).item() != pytest.approx(clip_loss(p, q, SCALE).item())


def test_weights_lie_in_unit_interval_with_unit_diagonal_and_rows_sum_to_one():
    q = unit(7, seed=5)
    w = continuous_weights(q, q)
    assert bool((w >= 0).all() and (w <= 1).all())
    torch.testing.assert_close(w.diagonal(), torch.ones(7, dtype=torch.float64))
    torch.testing.assert_close(w, w.T)
    torch.testing.assert_close(row_normalised(w).sum(dim=1), torch.ones(7, dtype=torch.float64))
    antipodal = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(
        continuous_weights(antipodal, antipodal), torch.eye(2, dtype=torch.float64)
    )


def test_weights_ignore_the_scale_of_raw_reference_features():
    raw = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    rescaled = raw * torch.tensor([0.1, 3.0, 7.0, 0.5, 100.0], dtype=torch.float64)[:, None]
    torch.testing.assert_close(continuous_weights(rescaled, rescaled), continuous_weights(raw, raw))


def test_permuting_the_pairs_together_leaves_the_loss_unchanged():
    p, q = unit(6, seed=7), unit(6, seed=8)
    perm = torch.tensor([4, 2, 0, 5, 1, 3])
    for kinds in (("continuous", "continuous"), ("one_hot", "continuous")):
        torch.testing.assert_close(
            cwcl_loss(p[perm], q[perm], SCALE, None, None, *kinds),
            cwcl_loss(p, q, SCALE, None, None, *kinds),
        )
    w = continuous_weights(q, q)
    torch.testing.assert_close(continuous_weights(q[perm], q[perm]), w[perm][:, perm])


def test_unknown_direction_kind_is_rejected():
    with pytest.raises(ValueError, match="reference_to_trained"):
        cwcl_loss(unit(3), unit(3, seed=1), SCALE, reference_to_trained="hard")
