"""WhitenedCSE's multi-positive InfoNCE, alone and after shuffled group whitening (statistics of
the global batch), against the slow references of tests/test_losses_whitened_cse.py: 2
processes must take the one-process step. The whitened case skips gradcheck: the whitening
matrix is a constant of the backward pass (as in the official code), not of the forward one."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.losses.whitened_cse import multi_positive_info_nce, shuffled_group_whitening
from tests.conformance.kit import F64, LossCase, randn, unit
from tests.test_losses_whitened_cse import slow_multi_positive, slow_sgw

N, D, GROUP = 8, 4, 2
PERMUTATIONS = (torch.tensor([2, 0, 3, 1]), torch.tensor([1, 3, 0, 2]), torch.arange(D))


def views(generator: torch.Generator) -> dict[str, Tensor]:
    return {
        "a": unit(generator, N, D),
        "b": unit(generator, N, D),
        "c": unit(generator, N, D),
        "scale": torch.tensor(2.5, dtype=F64),
    }


def raw_views(generator: torch.Generator) -> dict[str, Tensor]:
    return {
        "a": randn(generator, N, D),
        "b": randn(generator, N, D),
        "c": randn(generator, N, D),
        "scale": torch.tensor(2.5, dtype=F64),
    }


def whitened_loss(a: Tensor, b: Tensor, c: Tensor, scale: Tensor) -> Tensor:
    white = [
        F.normalize(shuffled_group_whitening(x, p, GROUP, eps=1e-4), dim=1)
        for x, p in zip((a, b, c), PERMUTATIONS, strict=True)
    ]
    return multi_positive_info_nce(white, scale)


def whitened_reference(a: Tensor, b: Tensor, c: Tensor, scale: Tensor) -> Tensor:
    white = []
    for x, p in zip((a, b, c), PERMUTATIONS, strict=True):
        groups = [p[i : i + GROUP].tolist() for i in range(0, D, GROUP)]
        white.append(F.normalize(slow_sgw(x, groups, eps=1e-4), dim=1))
    return slow_multi_positive(white, scale)


CASES = [
    LossCase(
        name="whitened_cse/multi_positive_info_nce",
        inputs=views,
        per_sample=("a", "b", "c"),
        loss=lambda a, b, c, scale: multi_positive_info_nce([a, b, c], scale),
        reference=lambda a, b, c, scale: slow_multi_positive([a, b, c], scale),
        differentiable=("a", "b", "c", "scale"),
    ),
    LossCase(
        name="whitened_cse/through_shuffled_group_whitening",
        inputs=raw_views,
        per_sample=("a", "b", "c"),
        loss=whitened_loss,
        reference=whitened_reference,
        differentiable=("a", "b", "c", "scale"),
        gradcheck=False,
        note="the whitening matrix is stop-gradient (official code): not the forward's derivative",
        atol=1e-9,
    ),
]
