"""The distributed Sinkhorn-Knopp (SwAV's ``distributed_sinkhorn``): each rank's codes of its
own rows must be those rows of the one-process codes of the whole batch. Checked through a
row-mean of the codes against fixed weights, so the kit's per-rank mean applies."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.sinkhorn import sinkhorn_knopp
from tests.conformance.kit import LossCase, randn, unit
from tests.test_losses_swav import official_sinkhorn

N, D, K = 8, 4, 5


def inputs(generator: torch.Generator) -> dict[str, Tensor]:
    scores = unit(generator, N, D) @ unit(generator, K, D).T
    return {"scores": scores, "weights": randn(generator, N, K)}


CASES = [
    LossCase(
        name="sinkhorn/global_equipartition",
        inputs=inputs,
        per_sample=("scores", "weights"),
        loss=lambda scores, weights: (
            (sinkhorn_knopp(scores, 0.05, 3, distributed=True) * weights).sum(dim=1).mean()
        ),
        reference=lambda scores, weights: (
            (official_sinkhorn(scores, 0.05, 3) * weights).sum(dim=1).mean()
        ),
        differentiable=(),
        gradcheck=False,
        note="codes carry no gradient (computed under no_grad): nothing to gradcheck",
    ),
]
