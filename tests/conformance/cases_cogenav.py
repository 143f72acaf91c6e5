"""CoGenAV's sync BCE (per pair, nothing gathered) against the slow loop of
tests/test_losses_cogenav.py: 2 processes, each with half of the pairs, must take the
one-process step."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.cogenav import sync_loss
from tests.conformance.kit import F64, LossCase, randn
from tests.test_losses_cogenav import slow_sync_loss

N, T, D = 8, 3, 4


def pairs(generator: torch.Generator) -> dict[str, Tensor]:
    """Audio and video frames with mostly positive cosines (d away from 0 and 1), labels 1/0."""
    audio = randn(generator, N, T, D)
    return {
        "audio": audio,
        "video": audio + 0.8 * randn(generator, N, T, D),
        "label": torch.tensor([1.0, 0.0] * (N // 2), dtype=F64),
    }


CASES = [
    LossCase(
        name="cogenav/sync_bce",
        inputs=pairs,
        per_sample=("audio", "video", "label"),
        loss=sync_loss,
        reference=slow_sync_loss,
        differentiable=("audio", "video"),
    ),
]
