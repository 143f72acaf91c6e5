"""The grounding losses of modules/losses/grounding.py (per query, nothing gathered) against
slow per-element references written here with loops: 2 processes, each with half of the
queries, must take the one-process step. The geodesic weights enter as a no-gradient input."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.grounding import iou_scaled_bce, weighted_nce
from tests.conformance.kit import F64, LossCase, randn

N, P = 8, 6


def moments(generator: torch.Generator) -> dict[str, Tensor]:
    """Scores of each query's P moments, their IoUs with the truth, the true moment and
    positive weights for the negatives."""
    return {
        "logits": randn(generator, N, P),
        "iou": torch.rand(N, P, generator=generator, dtype=F64),
        "positive": torch.randint(0, P, (N,), generator=generator),
        "weights": 0.2 + 2 * torch.rand(N, P, generator=generator, dtype=F64),
    }


def slow_weighted_nce(logits: Tensor, iou: Tensor, positive: Tensor, weights: Tensor) -> Tensor:
    total = logits.new_zeros(())
    for b in range(logits.shape[0]):
        pos = int(positive[b])
        denominator = torch.exp(logits[b, pos])
        for k in range(logits.shape[1]):
            if k != pos:
                denominator = denominator + weights[b, k] * torch.exp(logits[b, k])
        total = total - (logits[b, pos] - torch.log(denominator))
    return total / logits.shape[0]


def slow_iou_bce(logits: Tensor, iou: Tensor, positive: Tensor, weights: Tensor) -> Tensor:
    total = logits.new_zeros(())
    for b in range(logits.shape[0]):
        for k in range(logits.shape[1]):
            y = ((iou[b, k] - 0.5) / 0.5).clamp(0.0, 1.0)
            q = torch.sigmoid(logits[b, k])
            total = total - (y * torch.log(q) + (1 - y) * torch.log(1 - q))
    return total / logits.numel()


CASES = [
    LossCase(
        name="grounding/geodesic_weighted_nce",
        inputs=moments,
        per_sample=("logits", "iou", "positive", "weights"),
        loss=lambda logits, iou, positive, weights: weighted_nce(logits, positive, weights),
        reference=slow_weighted_nce,
        differentiable=("logits",),
        no_grad=("weights",),
    ),
    LossCase(
        name="grounding/iou_scaled_bce",
        inputs=moments,
        per_sample=("logits", "iou", "positive", "weights"),
        loss=lambda logits, iou, positive, weights: iou_scaled_bce(logits, iou, 0.5, 1.0),
        reference=slow_iou_bce,
        differentiable=("logits",),
    ),
]
