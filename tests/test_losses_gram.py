"""GRAM volume and loss: a slow Gram-Schmidt volume (no determinant) and per-row loss, the
official README form, the geometric limits of methods/part1.md Sec. 24 (k = 2 is |sin|,
identical vectors 0, orthonormal 1, permutation invariance, [0, 1], finite gradient at V = 0
with eps), temperature as a divisor, multi-positive ids and retrieval scores."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modules.losses.gram import gram_loss, gram_volume, pairwise_volume_scores

F64 = torch.float64
TOL = dict(rtol=0.0, atol=1e-10)


def unit(rows: int, dim: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=g, dtype=F64), dim=1)


def slow_volume(vectors: list[torch.Tensor]) -> torch.Tensor:
    """Volume of the parallelotope of ``vectors`` as the product of the Gram-Schmidt residual
    norms (base times height), one vector at a time."""
    basis, volume = [], torch.ones((), dtype=F64)
    for v in vectors:
        residual = v
        for e in basis:
            residual = residual - (residual @ e) * e
        norm = torch.sqrt(residual @ residual)
        volume = volume * norm
        basis.append(residual / norm)
    return volume


def slow_gram_loss(anchor, others, tau, smoothing, ids=None, eps=0.0):
    """Both directions of the volume contrastive loss, one (row, column) at a time; ``eps``
    floors the squared volume, ``sqrt(V^2 + eps)``."""
    n = anchor.shape[0]
    ids = list(range(n)) if ids is None else ids.tolist()

    def volume(i, j):  # anchor of sample i with the tuple of sample j
        v = slow_volume([anchor[i], *(o[j] for o in others)])
        return torch.sqrt(v * v + eps) if eps else v

    def direction(logit):
        total = 0.0
        for i in range(n):
            row = [logit(i, j) for j in range(n)]
            lse = torch.logsumexp(torch.stack(row), dim=0)
            positives = [j for j in range(n) if ids[j] == ids[i]]
            for j in range(n):
                q = smoothing / n + ((1 - smoothing) / len(positives) if j in positives else 0.0)
                total = total - q * (row[j] - lse)
        return total / n

    return 0.5 * (
        direction(lambda i, j: -volume(i, j) / tau) + direction(lambda i, j: -volume(j, i) / tau)
    )


def _problem(n: int = 6, k: int = 3, seed: int = 0):
    anchor = unit(n, seed=seed).requires_grad_()
    others = [unit(n, seed=seed + m + 1).requires_grad_() for m in range(k - 1)]
    tau = torch.tensor(0.07, dtype=F64, requires_grad=True)
    return anchor, others, tau


# ---------------------------------------------------------------- volume


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_volume_matches_gram_schmidt(k):
    anchor, others = unit(4, dim=6, seed=1), [unit(3, dim=6, seed=m + 2) for m in range(k - 1)]
    got = gram_volume(anchor, others)
    assert got.shape == (4, 3)
    for i in range(4):
        for j in range(3):
            want = slow_volume([anchor[i], *(o[j] for o in others)])
            torch.testing.assert_close(got[i, j], want, **TOL)


def test_two_vectors_give_the_absolute_sine():
    theta = torch.linspace(-3.0, 3.0, 13, dtype=F64)
    anchor = torch.stack([torch.cos(theta), torch.sin(theta), torch.zeros_like(theta)], dim=1)
    other = torch.tensor([[1.0, 0.0, 0.0]], dtype=F64)
    torch.testing.assert_close(gram_volume(anchor, [other])[:, 0], torch.sin(theta).abs(), **TOL)


def test_identical_vectors_give_zero_and_orthonormal_vectors_give_one():
    v = unit(1, seed=3)
    assert gram_volume(v, [v, v]).item() < 1e-7
    assert gram_volume(v, [2 * v]).item() < 1e-7  # any two parallel vectors
    eye = torch.eye(4, dtype=F64)
    torch.testing.assert_close(
        gram_volume(eye[:1], [eye[1:2], eye[2:3], eye[3:4]]), torch.ones(1, 1, dtype=F64), **TOL
    )
    rotation, _ = torch.linalg.qr(
        torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    )
    torch.testing.assert_close(
        gram_volume(rotation[:1], [rotation[1:2], rotation[2:3]]), torch.ones(1, 1, dtype=F64)
    )


def test_volume_is_invariant_to_permuting_the_modalities():
    a, m1, m2, m3 = (unit(5, seed=s) for s in (10, 11, 12, 13))
    diagonal = torch.diagonal(gram_volume(a, [m1, m2, m3]))
    for order in ([m3, m1, m2], [m2, m3, m1]):
        torch.testing.assert_close(gram_volume(a, order), gram_volume(a, [m1, m2, m3]), **TOL)
    for anchor, rest in ((m1, [a, m2, m3]), (m3, [m2, a, m1])):  # anchor swapped in
        torch.testing.assert_close(torch.diagonal(gram_volume(anchor, rest)), diagonal, **TOL)


def test_volume_of_unit_vectors_lies_in_zero_one_and_scales_with_norms():
    a, m1, m2 = unit(20, dim=4, seed=20), unit(20, dim=4, seed=21), unit(20, dim=4, seed=22)
    v = gram_volume(a, [m1, m2])
    assert (v >= 0).all() and (v <= 1).all()  # Hadamard's inequality
    torch.testing.assert_close(gram_volume(3 * a, [m1, 0.5 * m2]), 1.5 * v, **TOL)


def test_eps_keeps_the_gradient_finite_at_zero_volume():
    v = unit(1, seed=30)
    near = F.normalize(v + 1e-9 * unit(1, seed=31), dim=1)
    for other in (v, near):
        anchor = v.clone().requires_grad_()
        (grad,) = torch.autograd.grad(gram_volume(anchor, [other], eps=1e-8).sum(), anchor)
        assert torch.isfinite(grad).all()
    # eps shifts a volume by at most sqrt(eps) and not at all in the limit of large volumes.
    a, m = unit(4, seed=32), unit(4, seed=33)
    shift = gram_volume(a, [m], eps=1e-8) - gram_volume(a, [m])
    assert (shift >= 0).all() and (shift <= 1e-4).all()


def test_half_precision_volumes_are_computed_in_float32():
    a, m = unit(3, seed=40).half(), unit(3, seed=41).half()
    got = gram_volume(a, [m])
    assert got.dtype == torch.float32
    # The dot products stay in half precision (as official), the determinant is float32.
    torch.testing.assert_close(got, gram_volume(a.float(), [m.float()]), rtol=0, atol=2e-3)


def test_retrieval_scores_are_negative_volumes_in_any_block_size():
    a, m1, m2 = unit(7, seed=50), unit(5, seed=51), unit(5, seed=52)
    full = -gram_volume(a, [m1, m2])
    for block in (1, 3, 100):
        torch.testing.assert_close(pairwise_volume_scores(a, [m1, m2], block_rows=block), full)


# ---------------------------------------------------------------- loss


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_matches_the_slow_reference_with_gradients(k, smoothing):
    anchor, others, tau = _problem(k=k, seed=k)
    got = gram_loss(anchor, others, tau, label_smoothing=smoothing)
    want = slow_gram_loss(anchor, others, tau, smoothing)
    torch.testing.assert_close(got, want, **TOL)
    leaves = [anchor, *others, tau]
    for a, b in zip(
        torch.autograd.grad(got, leaves), torch.autograd.grad(want, leaves), strict=True
    ):
        torch.testing.assert_close(a, b, **TOL)


def test_loss_with_ids_matches_the_slow_multi_positive_reference():
    anchor, others, tau = _problem(n=7, seed=60)
    ids = torch.tensor([3, 1, 3, 0, 1, 2, 3])
    got = gram_loss(anchor, others, tau, 0.1, ids=ids)
    torch.testing.assert_close(got, slow_gram_loss(anchor, others, tau, 0.1, ids), **TOL)
    unique = torch.tensor([9, 4, 7, 1, 0, 2, 5])  # unique ids in any order: the diagonal
    torch.testing.assert_close(
        gram_loss(anchor, others, tau, 0.1, ids=unique), gram_loss(anchor, others, tau, 0.1), **TOL
    )


def test_loss_is_the_official_readme_form_with_tau_as_divisor():
    anchor, others, _ = _problem(n=5, seed=70)
    volume = gram_volume(anchor, others) / 0.07
    volume_t = gram_volume(anchor, others).T / 0.07
    targets = torch.linspace(0, 4, 5, dtype=int)
    official = (
        F.cross_entropy(-volume, targets, label_smoothing=0.1)
        + F.cross_entropy(-volume_t, targets, label_smoothing=0.1)
    ) / 2
    torch.testing.assert_close(gram_loss(anchor, others, 0.07), official, **TOL)
    # Not exp(tau) or 1/tau: halving tau doubles the logits.
    half = gram_loss(anchor, others, 0.035, label_smoothing=0.0)
    logits = -2 * volume
    doubled = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    torch.testing.assert_close(half, doubled, **TOL)


def test_loss_prefers_aligned_tuples_and_is_invariant_to_joint_permutation():
    anchor, others, tau = _problem(n=6, seed=80)
    aligned = [F.normalize(anchor.detach() + 0.05 * o.detach(), dim=1) for o in others]
    assert gram_loss(anchor, aligned, tau) < gram_loss(anchor, others, tau)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        gram_loss(anchor[perm], [o[perm] for o in others], tau),
        gram_loss(anchor, others, tau),
        **TOL,
    )


def test_loss_gradcheck_and_shape_errors():
    anchor, others, tau = _problem(n=4, seed=90)
    assert torch.autograd.gradcheck(
        lambda a, m1, m2, t: gram_loss(a, [m1, m2], t), (anchor, *others, tau)
    )
    with pytest.raises(ValueError, match="match the anchor"):
        gram_loss(anchor, [others[0][:3]], tau)
    with pytest.raises(ValueError, match="at least one"):
        gram_volume(anchor, [])
    with_eps = gram_loss(anchor, others, tau, eps=1e-3)
    torch.testing.assert_close(with_eps, slow_gram_loss(anchor, others, tau, 0.1, eps=1e-3), **TOL)
    assert not math.isclose(with_eps.item(), gram_loss(anchor, others, tau).item())
