"""GRAM's volume contrastive loss against the Gram-Schmidt (determinant-free) slow reference of
tests/test_losses_gram.py: k = 2, 3, 4 modalities, multi-positive ids, eps; tau learnable."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.gram import gram_loss
from tests.conformance.kit import F64, LossCase, unit
from tests.test_losses_gram import slow_gram_loss

N, D = 8, 5
IDS = torch.tensor([3, 0, 1, 3, 2, 0, 4, 5])  # ids 0 and 3 have positives on both ranks


def gram_case(name: str, k: int, with_ids: bool = False, eps: float = 0.0) -> LossCase:
    modalities = tuple(f"m{m}" for m in range(1, k))

    def inputs(generator: torch.Generator) -> dict[str, Tensor]:
        return {
            "anchor": unit(generator, N, D),
            **{m: unit(generator, N, D) for m in modalities},
            "tau": torch.tensor(0.07, dtype=F64),
            "ids": IDS.clone(),
        }

    def loss(anchor: Tensor, tau: Tensor, ids: Tensor, **others: Tensor) -> Tensor:
        tuple_ = [others[m] for m in modalities]
        return gram_loss(anchor, tuple_, tau, 0.1, ids if with_ids else None, eps)

    def reference(anchor: Tensor, tau: Tensor, ids: Tensor, **others: Tensor) -> Tensor:
        tuple_ = [others[m] for m in modalities]
        return slow_gram_loss(anchor, tuple_, tau, 0.1, ids if with_ids else None, eps)

    return LossCase(
        name=f"gram/{name}",
        inputs=inputs,
        per_sample=("anchor", *modalities, "ids"),
        loss=loss,
        reference=reference,
        differentiable=("anchor", *modalities, "tau"),
    )


CASES = [
    gram_case("k2", 2),
    gram_case("k3", 3),
    gram_case("k4_multi_positive_ids", 4, with_ids=True),
    gram_case("k3_eps", 3, eps=1e-3),
]
