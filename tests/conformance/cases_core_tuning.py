"""Core-tuning's focal SupCon (modules/losses/supcon.py with ``focal=True``) against the slow
reference of tests/test_core_tuning.py, in the paper's and the code's averages, with classes
that have positives on both ranks and one anchor without any positive."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.losses.supcon import supcon_loss
from tests.conformance.kit import LossCase, randn
from tests.test_core_tuning import slow_focal_supcon

N, D = 8, 5
IDS = torch.tensor([3, 0, 1, 3, 2, 0, 4, 3])  # 0 and 3 span both ranks; 1, 2, 4 are alone


def focal_case(average: str) -> LossCase:
    def inputs(generator: torch.Generator) -> dict[str, Tensor]:
        return {"z": F.normalize(randn(generator, N, D), dim=-1), "ids": IDS.clone()}

    def loss(z: Tensor, ids: Tensor) -> Tensor:
        return supcon_loss([z], ids, 0.2, focal=True, average=average)

    def reference(z: Tensor, ids: Tensor) -> Tensor:
        return slow_focal_supcon(z, ids, 0.2, average)

    return LossCase(
        name=f"core_tuning/focal_supcon_{average}",
        inputs=inputs,
        per_sample=("z", "ids"),
        loss=loss,
        reference=reference,
        differentiable=("z",),
    )


CASES = [focal_case("positives"), focal_case("columns")]
