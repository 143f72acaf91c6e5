"""CWCL's continuously weighted loss against a slow element-by-element reference, its limits
(identity weights, one-hot directions = CLIP) and invariances."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modules.losses.contrastive import clip_loss
from modules.losses.cwcl import continuous_weights, cwcl_loss, row_normalised


def unit(rows: int, dim: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=g, dtype=torch.float64), dim=1)


SCALE = torch.tensor(1 / 0.07, dtype=torch.float64)


def slow_cwcl(p, q, scale, forward="continuous", backward="continuous"):
    """The spec's sums written out pair by pair (one positive per row for one-hot)."""
    n = len(p)

    def dot(a, b):
        return sum(float(a[k]) * float(b[k]) for k in range(len(a)))

    def w(i, j):
        qi, qj = q[i] / math.sqrt(dot(q[i], q[i])), q[j] / math.sqrt(dot(q[j], q[j]))
        return 0.5 * dot(qi, qj) + 0.5

    def one_direction(rows, cols, kind):
        total = 0.0
        for i in range(n):
            logits = [float(scale) * dot(rows[i], cols[k]) for k in range(n)]
            log_z = math.log(sum(math.exp(v) for v in logits))
            if kind == "one_hot":
                total += -(logits[i] - log_z)
            else:
                norm = sum(w(i, j) for j in range(n))
                total += -sum(w(i, j) / norm * (logits[j] - log_z) for j in range(n))
        return total / n

    return 0.5 * (one_direction(p, q, forward) + one_direction(q, p, backward))


@pytest.mark.parametrize(
    "forward, backward",
    [("continuous", "continuous"), ("one_hot", "continuous"), ("continuous", "one_hot")],
)
def test_matches_the_slow_reference(forward, backward):
    p, q = unit(6, seed=1), unit(6, seed=2)
    got = cwcl_loss(p, q, SCALE, trained_to_reference=forward, reference_to_trained=backward)
    assert got.item() == pytest.approx(slow_cwcl(p, q, SCALE, forward, backward), abs=1e-10)


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


def test_no_gradient_reaches_the_reference_and_the_trained_gradient_checks():
    p = unit(5, seed=9).requires_grad_()
    q = unit(5, seed=10).requires_grad_()
    cwcl_loss(p, q, SCALE).backward()
    assert q.grad is None
    assert p.grad is not None and p.grad.abs().sum() > 0
    q_fixed = q.detach()
    assert torch.autograd.gradcheck(
        lambda x: cwcl_loss(x, q_fixed, SCALE), (unit(5, seed=11).requires_grad_(),)
    )


def test_unknown_direction_kind_is_rejected():
    with pytest.raises(ValueError, match="reference_to_trained"):
        cwcl_loss(unit(3), unit(3, seed=1), SCALE, reference_to_trained="hard")
