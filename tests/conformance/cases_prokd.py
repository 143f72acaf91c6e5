"""ProKD's prototype alignment (class means gathered over ranks, then L_PA) against the loop
references of tests/test_losses_prokd.py. The classes are spread unevenly over the ranks
(rank 0 holds every source token of class 2), which the global class sums must handle."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.prokd import class_means, prototype_alignment
from tests.conformance.kit import LossCase, randn
from tests.test_losses_prokd import slow_alignment_loss

N, D, K, TAU = 8, 4, 4, 0.2  # global tokens per language (4 per rank)


def inputs(generator: torch.Generator) -> dict[str, Tensor]:
    return {
        "source": randn(generator, N, D),
        "target": randn(generator, N, D),
        "source_labels": torch.tensor([2, 2, 0, -1, 1, 0, 3, 1]),
        "target_labels": torch.tensor([0, 1, 1, 3, -1, 3, 0, 2]),
    }


def alignment(source, target, source_labels, target_labels):
    s, s_n = class_means(source, source_labels, K)
    t, t_n = class_means(target, target_labels, K)
    return prototype_alignment(s, t, (s_n > 0) & (t_n > 0), TAU)


def alignment_reference(source, target, source_labels, target_labels):
    return slow_alignment_loss(source, source_labels, target, target_labels, K, TAU)


CASES = [
    LossCase(
        name="prokd/alignment",
        inputs=inputs,
        per_sample=("source", "target", "source_labels", "target_labels"),
        loss=alignment,
        reference=alignment_reference,
        differentiable=("source", "target"),
    ),
]
