"""DSE's combined loss against the per-pair references of tests/test_losses_dse.py: the mean
over pairs needs no gather, so 2 processes with half the pairs each give the one-process loss."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.dse import dse_terms
from tests.conformance.kit import F64, LossCase, randn
from tests.test_losses_dse import slow_bce, slow_distillation

PAIRS = 8


def pairs(generator: torch.Generator) -> dict[str, Tensor]:
    return {
        "student": randn(generator, PAIRS, 1),
        "teacher": randn(generator, PAIRS, 1),
        "labels": torch.randint(0, 2, (PAIRS,), generator=generator),
    }


def dse_case(alpha: float) -> LossCase:
    def loss(student, teacher, labels):
        return sum(dse_terms(student, labels, teacher, alpha).values())

    def reference(student, teacher, labels):
        task = torch.nn.functional.binary_cross_entropy_with_logits(
            student[:, 0], labels.to(F64)
        )  # value checked against slow_bce below
        assert abs(task.item() - slow_bce(student.detach(), labels)) < 1e-10
        return (1 - alpha) * task + alpha * slow_distillation(student, teacher)

    return LossCase(
        name=f"dse/alpha_{alpha}",
        inputs=pairs,
        per_sample=("student", "teacher", "labels"),
        loss=loss,
        reference=reference,
        differentiable=("student",),
        no_grad=("teacher",),
    )


CASES = [dse_case(0.5), dse_case(1.0)]
