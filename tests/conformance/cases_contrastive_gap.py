"""The contrastive-gap terms (CUA/CUAXU): in-modal and cross-modal uniformity over the global
batch, alignment over pairs, and their sum with CLIP as the method computes it; references
written pair by pair."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.contrastive import clip_loss
from modules.losses.contrastive_gap import alignment, cross_modal_uniformity, in_modal_uniformity
from tests.conformance.cases_contrastive import slow_clip
from tests.conformance.kit import F64, LossCase, unit

N, D = 8, 4
IDS = torch.tensor([0, 1, 2, 0, 3, 4, 1, 5])  # ids 0 and 1 have positives on both ranks


def squared_distance(a: Tensor, b: Tensor) -> Tensor:
    return sum((a[k] - b[k]) ** 2 for k in range(a.shape[0]))


def log_mean_exp(values: list[Tensor]) -> Tensor:
    return torch.log(sum(torch.exp(v) for v in values) / len(values))


def slow_uniformity(x: Tensor) -> Tensor:
    """``log mean_{i<j} exp(-2 |x_i - x_j|^2)``, pair by pair."""
    n = x.shape[0]
    return log_mean_exp(
        [-2 * squared_distance(x[i], x[j]) for i in range(n) for j in range(i + 1, n)]
    )


def slow_in_modal(x: Tensor, y: Tensor) -> Tensor:
    return 0.5 * (slow_uniformity(x) + slow_uniformity(y))


def slow_cross_modal(x: Tensor, y: Tensor) -> Tensor:
    """``log mean_{i != j} exp(-2 |x_i - y_j|^2)``: the true pairs are left out."""
    n = x.shape[0]
    return log_mean_exp(
        [-2 * squared_distance(x[i], y[j]) for i in range(n) for j in range(n) if i != j]
    )


def slow_alignment(x: Tensor, y: Tensor) -> Tensor:
    return sum(squared_distance(x[i], y[i]) for i in range(x.shape[0])) / x.shape[0]


def embeddings(generator: torch.Generator) -> dict[str, Tensor]:
    return {
        "x": unit(generator, N, D),
        "y": unit(generator, N, D),
        "scale": torch.tensor(1 / 0.07, dtype=F64),
        "ids": IDS.clone(),
    }


def term_case(name: str, loss, reference) -> LossCase:
    return LossCase(
        name=f"contrastive_gap/{name}",
        inputs=embeddings,
        per_sample=("x", "y", "ids"),
        loss=lambda x, y, scale, ids: loss(x, y),
        reference=lambda x, y, scale, ids: reference(x, y),
        differentiable=("x", "y"),
    )


CASES = [
    term_case("in_modal_uniformity", in_modal_uniformity, slow_in_modal),
    term_case("cross_modal_uniformity", cross_modal_uniformity, slow_cross_modal),
    term_case("alignment", alignment, slow_alignment),
    LossCase(  # the CUAXU total of modules/cuaxu.py (weights 1), the fixed scale 1 / 0.07
        name="contrastive_gap/cuaxu_total",
        inputs=embeddings,
        per_sample=("x", "y", "ids"),
        loss=lambda x, y, scale, ids: (
            clip_loss(x, y, scale, ids=ids)
            + in_modal_uniformity(x, y)
            + cross_modal_uniformity(x, y)
            + alignment(x, y)
        ),
        reference=lambda x, y, scale, ids: (
            slow_clip(x, y, scale, ids, 0.0)
            + slow_in_modal(x, y)
            + slow_cross_modal(x, y)
            + slow_alignment(x, y)
        ),
        differentiable=("x", "y", "scale"),
    ),
]
