"""SimCSE's loss (modules/losses/simcse.py) on 2 processes against the slow reference of
tests/test_losses_simcse.py: local anchors against the gathered positives and hard negatives."""

from __future__ import annotations

import torch

from modules.losses.simcse import simcse_loss
from tests.conformance.kit import F64, LossCase, unit
from tests.test_losses_simcse import slow_loss

N = 8
WEIGHT = 0.7  # hard_negative_weight


def views(count: int):
    def inputs(generator: torch.Generator) -> dict[str, torch.Tensor]:
        names = ("anchor", "positive", "hard_negative")[:count]
        drawn = {name: unit(generator, N, 4) for name in names}
        return {**drawn, "logit_scale": torch.tensor(20.0, dtype=F64)}

    return inputs


CASES = [
    LossCase(
        name="simcse/unsupervised",
        inputs=views(2),
        per_sample=("anchor", "positive"),
        loss=simcse_loss,
        reference=slow_loss,
        differentiable=("anchor", "positive", "logit_scale"),
    ),
    LossCase(
        name="simcse/hard_negatives",
        inputs=views(3),
        per_sample=("anchor", "positive", "hard_negative"),
        loss=lambda **kw: simcse_loss(**kw, hard_negative_weight=WEIGHT),
        reference=lambda **kw: slow_loss(**kw, hard_negative_weight=WEIGHT),
        differentiable=("anchor", "positive", "hard_negative", "logit_scale"),
    ),
]
