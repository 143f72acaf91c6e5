"""The modality-pairwise loss against the per-anchor slow reference of
tests/test_losses_modality_pairwise.py: M = 3 and 4, multi-positive ids, the anchored star;
the logit scale a replicated input."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.modality_pairwise import modality_pairwise_loss
from tests.conformance.kit import F64, LossCase, unit
from tests.test_losses_modality_pairwise import slow_pairwise

N, D = 8, 5
IDS = torch.tensor([3, 0, 1, 3, 2, 0, 4, 5])  # ids 0 and 3 have positives on both ranks


def pairwise_case(name: str, m: int, with_ids: bool = False, anchor: int | None = None) -> LossCase:
    modalities = tuple(f"m{k}" for k in range(m))

    def inputs(generator: torch.Generator) -> dict[str, Tensor]:
        return {
            **{k: unit(generator, N, D) for k in modalities},
            "scale": torch.tensor(1 / 0.07, dtype=F64),
            "ids": IDS.clone(),
        }

    def loss(scale: Tensor, ids: Tensor, **features: Tensor) -> Tensor:
        chosen = ids if with_ids else None
        return modality_pairwise_loss([features[k] for k in modalities], scale, chosen, anchor)

    def reference(scale: Tensor, ids: Tensor, **features: Tensor) -> Tensor:
        chosen = ids if with_ids else None
        return slow_pairwise([features[k] for k in modalities], scale, chosen, anchor)

    return LossCase(
        name=f"modality_pairwise/{name}",
        inputs=inputs,
        per_sample=(*modalities, "ids"),
        loss=loss,
        reference=reference,
        differentiable=(*modalities, "scale"),
    )


CASES = [
    pairwise_case("m3", 3),
    pairwise_case("m4_multi_positive_ids", 4, with_ids=True),
    pairwise_case("m3_anchored", 3, anchor=2),
    pairwise_case("m4_anchored_first", 4, with_ids=True, anchor=0),
]
