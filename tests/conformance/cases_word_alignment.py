"""RCSLS: a per-pair loss (no gathering; the neighbourhoods range over replicated vocabularies)
against the loop reference of tests/test_losses_word_alignment.py."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.word_alignment import rcsls_loss
from tests.conformance.kit import LossCase, randn, unit
from tests.test_losses_word_alignment import slow_rcsls


def _inputs(generator: torch.Generator) -> dict[str, Tensor]:
    return {
        "x": unit(generator, 8, 4),
        "y": unit(generator, 8, 4),
        "source": unit(generator, 9, 4),
        "target": unit(generator, 11, 4),
        "w": torch.eye(4, dtype=torch.float64) + 0.3 * randn(generator, 4, 4),
    }


CASES = [
    LossCase(
        name="word_alignment/rcsls",
        inputs=_inputs,
        per_sample=("x", "y"),
        loss=lambda x, y, source, target, w: rcsls_loss(x, y, source, target, w, 3),
        reference=lambda x, y, source, target, w: slow_rcsls(x, y, source, target, w, 3),
        differentiable=("x", "y", "source", "target", "w"),
    )
]
