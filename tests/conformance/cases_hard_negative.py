"""The hard-negative contrastive loss (modules/losses/hard_negative.py) against the slow loop of
tests/test_losses_hard_negative.py: each rank's rows pick their hard negatives among the
gathered columns of both views, so 2 processes must take the one-process step."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.hard_negative import hard_negative_loss
from tests.conformance.kit import F64, LossCase, unit
from tests.test_losses_hard_negative import slow_hard_negative

N, D = 8, 4


def views(generator: torch.Generator) -> dict[str, Tensor]:
    return {
        "a": unit(generator, N, D),
        "b": unit(generator, N, D),
        "logit_scale": torch.tensor(2.5, dtype=F64),
    }


def case(fraction: float) -> LossCase:
    return LossCase(
        name=f"hard_negative/fraction_{fraction}",
        inputs=views,
        per_sample=("a", "b"),
        loss=lambda a, b, logit_scale: hard_negative_loss(a, b, logit_scale, fraction),
        reference=lambda a, b, logit_scale: slow_hard_negative(a, b, logit_scale, fraction),
        differentiable=("a", "b", "logit_scale"),
    )


#: a quarter of the 14 negatives (4: the paper's share), and every negative (NT-Xent)
CASES = [case(0.25), case(1.0)]
