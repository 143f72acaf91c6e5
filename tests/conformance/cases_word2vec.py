"""word2vec's CBOW negative sampling: a per-sample loss (no gathering) against the loop
reference of tests/test_losses_word2vec.py."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.word2vec import cbow_negative_sampling
from tests.conformance.kit import LossCase, randn
from tests.test_losses_word2vec import slow_cbow


def _inputs(generator: torch.Generator) -> dict[str, Tensor]:
    return {
        "context": randn(generator, 8, 4),
        "center": randn(generator, 8, 4),
        "negatives": randn(generator, 8, 3, 4),
    }


CASES = [
    LossCase(
        name="word2vec/cbow_negative_sampling",
        inputs=_inputs,
        per_sample=("context", "center", "negatives"),
        loss=cbow_negative_sampling,
        reference=slow_cbow,
        differentiable=("context", "center", "negatives"),
    )
]
