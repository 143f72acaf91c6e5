"""ConR against the per-anchor slow reference of tests/test_losses_conr.py (itself checked
against the transcribed official ``ConR``): both denominators, LDS-style weights, eta = 0.
Each rank holds [its view-0 rows; its view-1 rows], as a method passes cat(view0, view1)."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.conr import conr_loss
from tests.conformance.kit import F64, LossCase, randn
from tests.test_losses_conr import slow_conr

PER_RANK, D = 2, 3  # samples per rank; each appears twice (two views)


def two_views(generator: torch.Generator) -> dict[str, Tensor]:
    ages = torch.randint(18, 26, (2, PER_RANK), generator=generator).to(F64)  # [rank, sample]
    targets = torch.cat([ages, ages], dim=1).flatten()  # rank r: [y_r, y_r]
    return {
        "features": randn(generator, 4 * PER_RANK, D),
        "targets": targets,
        "predictions": 22 + 2 * randn(generator, 4 * PER_RANK),  # some wrong proximities
        "weights": 0.5 + torch.rand(4 * PER_RANK, generator=generator, dtype=F64),
    }


def conr_case(name: str, weighted: bool, eta: float, official: bool) -> LossCase:
    def loss(features, targets, predictions, weights):
        w = weights if weighted else None
        return conr_loss(features, targets, predictions, w, 1.0, eta, 0.07, official)

    def reference(features, targets, predictions, weights):
        w = weights if weighted else torch.ones_like(weights)
        return slow_conr(features, targets, predictions, w, 1.0, eta, 0.07, official)

    return LossCase(
        name=f"conr/{name}",
        inputs=two_views,
        per_sample=("features", "targets", "predictions", "weights"),
        loss=loss,
        reference=reference,
        differentiable=("features",),
        no_grad=("predictions",),
    )


CASES = [
    conr_case("official", weighted=False, eta=0.01, official=True),
    conr_case("official_weighted", weighted=True, eta=0.01, official=True),
    conr_case("paper_denominator_weighted", weighted=True, eta=0.01, official=False),
    conr_case("eta_zero", weighted=False, eta=0.0, official=False),
]
