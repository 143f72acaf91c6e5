"""Input-label contrast (modules/losses/input_label_contrast.py) on 2 processes against the loop
reference of tests/test_input_label_contrast.py: every rank holds all label embeddings, so the
mean of the ranks' losses is the global batch's."""

from __future__ import annotations

import torch

from modules.losses.input_label_contrast import input_label_contrast_loss
from tests.conformance.kit import F64, LossCase, unit
from tests.test_input_label_contrast import loop_reference

N, CLASSES = 8, 3


def inputs(generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "inputs": unit(generator, N, 4),
        "labels": unit(generator, CLASSES, 4),
        "targets": torch.randint(CLASSES, (N,), generator=generator),
        "logit_scale": torch.tensor(20.0, dtype=F64),
    }


CASES = [
    LossCase(
        name="input_label_contrast/loss",
        inputs=inputs,
        per_sample=("inputs", "targets"),
        loss=input_label_contrast_loss,
        reference=lambda inputs, labels, targets, logit_scale: loop_reference(
            inputs, labels, targets, logit_scale
        ),
        differentiable=("inputs", "labels", "logit_scale"),
    ),
]
