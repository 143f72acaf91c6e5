"""WhitenedCSE's shuffled group whitening and multi-positive InfoNCE
(modules/losses/whitened_cse.py) against slow references written from the paper's description:
per-group covariance and its inverse square root computed with scipy on each group's channels,
InfoNCE scalar by scalar. The 2-process checks are in tests/conformance/cases_whitened_cse.py."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import Tensor

from modules.losses.whitened_cse import (
    group_whiten,
    multi_positive_info_nce,
    shuffled_group_whitening,
)

F64 = torch.float64


def randn(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def unit(*shape: int, seed: int = 0) -> Tensor:
    return torch.nn.functional.normalize(randn(*shape, seed=seed), dim=-1)


def zca_matrix(x: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """(Sigma + eps I)^(-1/2) of the columns of ``x`` [N, g] (biased covariance), by scipy."""
    centred = x - x.mean(axis=0)
    covariance = sum(np.outer(row, row) for row in centred) / len(x)
    return np.real(scipy.linalg.inv(scipy.linalg.sqrtm(covariance + eps * np.eye(x.shape[1]))))


def slow_sgw(x: Tensor, groups: list[list[int]], eps: float = 0.0) -> Tensor:
    """Whiten each channel set of ``groups`` on its own over the batch; the matrix is a constant
    (no gradient), the centring is differentiated."""
    out = torch.zeros_like(x)
    centred = x - x.mean(dim=0, keepdim=True)
    for channels in groups:
        w = torch.from_numpy(zca_matrix(x[:, channels].detach().numpy(), eps))
        out[:, channels] = centred[:, channels] @ w
    return out


def slow_multi_positive(views: list[Tensor], scale: float) -> Tensor:
    """sum_k mean_i -log exp(s(z1_i, zk_i) scale) / sum_j exp(s(z1_i, zk_j) scale)."""
    n = len(views[0])
    total = torch.zeros((), dtype=F64)
    for view in views[1:]:
        for i in range(n):
            logits = [scale * torch.dot(views[0][i], view[j]) for j in range(n)]
            total = total - (logits[i] - torch.log(sum(torch.exp(s) for s in logits))) / n
    return total


def test_group_whitening_gives_identity_covariance_in_every_group() -> None:
    x = randn(64, 12) @ randn(12, 12, seed=1) + 3.0  # correlated channels, shifted
    white = group_whiten(x, group_size=4)
    assert torch.allclose(white.mean(dim=0), torch.zeros(12, dtype=F64), atol=1e-10)
    for g in range(3):
        block = white[:, 4 * g : 4 * g + 4]
        torch.testing.assert_close(block.T @ block / 64, torch.eye(4, dtype=F64))
    # across groups the channels stay correlated: whitening is per group only
    assert (white[:, :4].T @ white[:, 4:8] / 64).abs().max() > 0.1


def test_group_whitening_equals_the_scipy_reference() -> None:
    x = randn(16, 6)
    torch.testing.assert_close(
        group_whiten(x, 3, eps=1e-3), slow_sgw(x, [[0, 1, 2], [3, 4, 5]], eps=1e-3)
    )


def test_shuffled_groups_are_the_permuted_channel_sets_and_order_is_restored() -> None:
    x = randn(20, 6)
    permutation = torch.tensor([4, 0, 5, 2, 1, 3])
    got = shuffled_group_whitening(x, permutation, group_size=2)
    torch.testing.assert_close(got, slow_sgw(x, [[4, 0], [5, 2], [1, 3]]))
    # the identity permutation is plain contiguous group whitening
    torch.testing.assert_close(
        shuffled_group_whitening(x, torch.arange(6), group_size=2), group_whiten(x, 2)
    )
    # one group: ZCA commutes with permutations, so every permutation gives the same output
    torch.testing.assert_close(
        shuffled_group_whitening(x, permutation, group_size=6), group_whiten(x, 6)
    )


def test_different_permutations_give_different_views_of_one_input() -> None:
    x = randn(32, 8)
    a = shuffled_group_whitening(x, torch.arange(8), 2)
    b = shuffled_group_whitening(x, torch.tensor([0, 4, 1, 5, 2, 6, 3, 7]), 2)
    assert (a - b).abs().max() > 0.1


def test_whitening_is_invariant_to_shift_and_scale() -> None:
    x = randn(24, 6)
    torch.testing.assert_close(group_whiten(3.0 * x + 7.0, 3), group_whiten(x, 3))


def test_whitening_matrix_gets_no_gradient_the_centring_does() -> None:
    x = randn(16, 4).requires_grad_()
    weights = randn(16, 4, seed=3)
    (group_whiten(x, 2) * weights).sum().backward()
    expected = x.detach().clone().requires_grad_()
    (slow_sgw(expected, [[0, 1], [2, 3]]) * weights).sum().backward()
    torch.testing.assert_close(x.grad, expected.grad)


def test_group_size_must_divide_the_width() -> None:
    with pytest.raises(ValueError, match="group_size 4"):
        group_whiten(randn(8, 6), 4)


def test_multi_positive_info_nce_equals_the_slow_loop() -> None:
    views = [unit(6, 5, seed=s) for s in range(3)]
    got = multi_positive_info_nce(views, 4.0)
    torch.testing.assert_close(got, slow_multi_positive(views, 4.0))


def test_two_views_without_whitening_is_simcse() -> None:
    a, b = unit(6, 5, seed=0), unit(6, 5, seed=1)
    simcse = torch.nn.functional.cross_entropy(20.0 * a @ b.T, torch.arange(6))
    torch.testing.assert_close(multi_positive_info_nce([a, b], 20.0), simcse)


def test_perfectly_aligned_distinct_views_reach_the_lower_limit() -> None:
    """Orthogonal anchors, each positive its own anchor: each term tends to 0 as the scale grows;
    at scale 0 each term is log N."""
    z = torch.eye(4, dtype=F64)
    assert multi_positive_info_nce([z, z, z], 100.0) < 1e-40
    torch.testing.assert_close(
        multi_positive_info_nce([z, z, z], 0.0), torch.tensor(2 * np.log(4), dtype=F64)
    )


def test_multi_positive_gradient_flows_to_every_view() -> None:
    views = [unit(5, 4, seed=s).requires_grad_() for s in range(3)]
    multi_positive_info_nce(views, 5.0).backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in views)


def test_a_single_view_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 views"):
        multi_positive_info_nce([unit(4, 3)], 1.0)
