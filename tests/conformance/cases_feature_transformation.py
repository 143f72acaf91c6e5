"""FT's MoCo loss (modules/losses/feature_transformation.py) against the slow loop of
tests/test_losses_feature_transformation.py: plain MoCo (lambda = mu = 1) and both
transformations on. The queue and the step's draw are the same on every rank (replicated); the
queries and keys are split by rows, so 2 processes must take the 1-process step."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.feature_transformation import Transformation, feature_transformation_loss
from tests.conformance.kit import LossCase, unit
from tests.test_losses_feature_transformation import slow_ft_loss

N, D, K, TAU = 8, 5, 6, 0.2
PERM = [3, 0, 5, 1, 2, 4]


def ft_case(name: str, lam: float, mu: float) -> LossCase:
    def inputs(generator: torch.Generator) -> dict[str, Tensor]:
        return {
            "q": unit(generator, N, D),
            "k": unit(generator, N, D),
            "queue": unit(generator, K, D),
        }

    def loss(q: Tensor, k: Tensor, queue: Tensor) -> Tensor:
        draw = Transformation(lam, mu, torch.tensor(PERM))
        return feature_transformation_loss(q, k, queue, 1 / TAU, draw)

    def reference(q: Tensor, k: Tensor, queue: Tensor) -> Tensor:
        return slow_ft_loss(q, k, queue, TAU, lam, mu, PERM)

    return LossCase(
        name=f"feature_transformation/{name}",
        inputs=inputs,
        per_sample=("q", "k"),
        loss=loss,
        reference=reference,
        differentiable=("q",),
        no_grad=("k", "queue"),
    )


CASES = [ft_case("moco", 1.0, 1.0), ft_case("extrapolate_interpolate", 1.7, 0.3)]
