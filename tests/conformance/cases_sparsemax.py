"""Sparsemax (FDT's token weights) against the simplex projection found by trying every support
size; the output is a tensor, so the kit compares it whole and its gradient along a fixed
direction."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.sparsemax import sparsemax
from tests.conformance.kit import LossCase, randn

ROWS, K = 6, 7
NOTE = "row-wise normalisation, not a batch loss: no row sees another, nothing to gather"


def slow_sparsemax_row(z: list[Tensor]) -> list[Tensor]:
    """The threshold of the largest support size k whose k-th largest score stays above it,
    ``tau = (sum of the k largest - 1) / k``; then ``max(z_i - tau, 0)``."""
    ordered = sorted(z, key=lambda v: float(v.detach()), reverse=True)
    tau = None
    for k in range(1, len(z) + 1):
        candidate = (sum(ordered[:k]) - 1) / k
        if float(ordered[k - 1].detach()) > float(candidate.detach()):
            tau = candidate
    return [torch.clamp(v - tau, min=0.0) for v in z]


def slow_sparsemax(scores: Tensor) -> Tensor:
    return torch.stack([torch.stack(slow_sparsemax_row(list(row))) for row in scores])


def scores(generator: torch.Generator) -> dict[str, Tensor]:
    """Rows from nearly flat (dense output) to spread out (one or two non-zeros)."""
    spread = torch.tensor([0.1, 0.5, 1.0, 2.0, 4.0, 10.0], dtype=torch.float64)[:, None]
    return {"scores": randn(generator, ROWS, K) * spread}


CASES = [
    LossCase(
        name="sparsemax/rows",
        inputs=scores,
        per_sample=("scores",),
        loss=lambda scores: sparsemax(scores),
        reference=slow_sparsemax,
        differentiable=("scores",),
        distributed=False,
        note=NOTE,
    ),
    LossCase(
        name="sparsemax/dim0",
        inputs=scores,
        per_sample=("scores",),
        loss=lambda scores: sparsemax(scores.T, dim=0),
        reference=lambda scores: slow_sparsemax(scores).T,
        differentiable=("scores",),
        distributed=False,
        note=NOTE,
    ),
]
