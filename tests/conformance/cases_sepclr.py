"""SepCLR's objective (modules/losses/sepclr.py) against the slow loop reference of
tests/test_losses_sepclr.py; the target flags differ per rank (3 targets on rank 0, 1 on rank
1), so the gathered statistics must be the global batch's."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.sepclr import sepclr_loss
from tests.conformance.kit import LossCase, randn, unit
from tests.test_losses_sepclr import slow_loss

N = 8
TARGET = torch.tensor([1, 1, 0, 1, 0, 0, 1, 0], dtype=torch.bool)


def codes(generator: torch.Generator) -> dict[str, Tensor]:
    return {
        "c1": unit(generator, N, 4),
        "c2": unit(generator, N, 4),
        "s1": randn(generator, N, 3),
        "s2": randn(generator, N, 3),
        "target": TARGET.clone(),
    }


CASES = [
    LossCase(
        name="sepclr/objective",
        inputs=codes,
        per_sample=("c1", "c2", "s1", "s2", "target"),
        loss=sepclr_loss,
        reference=slow_loss,
        differentiable=("c1", "c2", "s1", "s2"),
        atol=1e-8,
    ),
]
