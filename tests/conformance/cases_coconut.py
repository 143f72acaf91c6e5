"""COCONUT's NSPT and multimodal supervised contrastive losses against the loop references of
tests/test_losses_coconut.py. The rehearsal flags are uneven across ranks (rank 0 holds more
rehearsal rows than rank 1), which the global-count normalisation must handle."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.losses.coconut import multimodal_supcon_loss, nspt_loss
from tests.conformance.kit import LossCase, randn
from tests.test_losses_coconut import slow_mm, slow_nspt

N, D = 8, 4  # global rows (4 per rank)


def inputs(generator: torch.Generator) -> dict[str, Tensor]:
    return {
        "student": F.normalize(randn(generator, N, D), dim=1),
        "teacher": F.normalize(randn(generator, N, D), dim=1),
        "text": F.normalize(randn(generator, N, D), dim=1),
        "labels": torch.tensor([0, 1, 0, 2, 1, 0, 2, 1]),
        "flags": torch.tensor([1, 1, 1, 0, 0, 1, 0, 0]),  # rank 0: 3 rehearsal, rank 1: 1
    }


def nspt(student, teacher, text, labels, flags):
    return nspt_loss(student, teacher, labels, flags.bool(), 0.2)


def nspt_reference(student, teacher, text, labels, flags):
    return slow_nspt(student, teacher, labels, flags.bool(), 0.2)


def mm(student, teacher, text, labels, flags):
    return multimodal_supcon_loss(student, text, labels, ~flags.bool(), 5.0)


def mm_reference(student, teacher, text, labels, flags):
    return slow_mm(student, text, labels, ~flags.bool(), 5.0)


PER_SAMPLE = ("student", "teacher", "text", "labels", "flags")
CASES = [
    LossCase(
        name="coconut/nspt",
        inputs=inputs,
        per_sample=PER_SAMPLE,
        loss=nspt,
        reference=nspt_reference,
        differentiable=("student",),
        no_grad=("teacher",),
    ),
    LossCase(
        name="coconut/mm",
        inputs=inputs,
        per_sample=PER_SAMPLE,
        loss=mm,
        reference=mm_reference,
        differentiable=("student", "text"),
    ),
]
