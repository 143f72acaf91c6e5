"""SwAV swapped prediction against the transcription of the official ``main_swav.py`` loss
block (tests/test_losses_swav.py), two views and multi-crop; codes from the global batch."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from modules.losses.swav import swav_loss
from tests.conformance.kit import LossCase, unit
from tests.test_losses_swav import official_swav

N, D, K = 8, 4, 5


def crops(views: int) -> Callable[[torch.Generator], dict[str, Tensor]]:
    def inputs(generator: torch.Generator) -> dict[str, Tensor]:
        return {
            **{f"z{v}": unit(generator, N, D) for v in range(views)},
            "prototypes": unit(generator, K, D),
        }

    return inputs


def swav_case(name: str, views: int, differentiable: tuple[str, ...], note: str) -> LossCase:
    def loss(prototypes: Tensor, **z: Tensor) -> Tensor:
        return swav_loss([z[f"z{v}"] for v in range(views)], prototypes, (0, 1))

    def reference(prototypes: Tensor, **z: Tensor) -> Tensor:
        return official_swav([z[f"z{v}"] for v in range(views)], prototypes, (0, 1), 0.1, 0.05, 3)

    return LossCase(
        name=f"swav/{name}",
        inputs=crops(views),
        per_sample=tuple(f"z{v}" for v in range(views)),
        loss=loss,
        reference=reference,
        differentiable=differentiable,
        gradcheck=not note,
        note=note,
    )


STOP_GRADIENT = (
    "the codes are a stop-gradient function of the large crops and the prototypes: finite "
    "differences see them move, the SwAV gradient by design does not"
)
CASES = [
    swav_case("two_views", 2, ("z0", "z1", "prototypes"), STOP_GRADIENT),
    swav_case("multi_crop", 4, ("z0", "z1", "z2", "z3", "prototypes"), STOP_GRADIENT),
    # The small crops never make codes, so for them the SwAV gradient is the true derivative.
    swav_case("multi_crop_small_crops", 4, ("z2", "z3"), ""),
]
