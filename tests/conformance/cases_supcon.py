"""SupCon (modules/losses/supcon.py) against the slow reference of
tests/test_losses_supcon.py: two and four views, class ids with positives on both ranks, and a
``keep`` mask that keeps a different number of samples on each rank (CoMix's confident
pseudo-labels)."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.supcon import supcon_loss
from tests.conformance.kit import LossCase, randn
from tests.test_losses_supcon import slow_supcon

N, D = 8, 5
IDS = torch.tensor([3, 0, 1, 3, 2, 0, 4, 3])  # ids 0 and 3 have positives on both ranks
KEEP = torch.tensor([True, True, True, False, False, True, True, True])  # 3 kept vs 4


def supcon_case(name: str, views: int, with_keep: bool, base: float | None) -> LossCase:
    names = tuple(f"v{k}" for k in range(views))

    def inputs(generator: torch.Generator) -> dict[str, Tensor]:
        return {
            **{k: randn(generator, N, D).softmax(dim=-1) for k in names},
            "ids": IDS.clone(),
            "keep": KEEP.clone(),
        }

    def loss(ids: Tensor, keep: Tensor, **feats: Tensor) -> Tensor:
        chosen = keep if with_keep else None
        return supcon_loss([feats[k] for k in names], ids, 0.5, base, chosen)

    def reference(ids: Tensor, keep: Tensor, **feats: Tensor) -> Tensor:
        chosen = keep if with_keep else None
        return slow_supcon([feats[k] for k in names], ids, 0.5, base, chosen)

    return LossCase(
        name=f"supcon/{name}",
        inputs=inputs,
        per_sample=(*names, "ids", "keep"),
        loss=loss,
        reference=reference,
        differentiable=names,
    )


CASES = [
    supcon_case("two_views_classes", 2, with_keep=False, base=None),
    supcon_case("four_views_base_temperature", 4, with_keep=False, base=0.07),
    supcon_case("two_views_keep", 2, with_keep=True, base=0.07),
]
