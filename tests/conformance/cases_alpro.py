"""ALPRO's PEM loss and masked means (modules/losses/alpro.py) against sums written out row by
row: ``sum over selected rows / number selected in the whole batch``, so 2 ranks with different
numbers of selected rows still average to the one-process value."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.alpro import masked_token_mean, pem_loss
from tests.conformance.kit import LossCase, randn

N, K, L = 8, 5, 3
# rank 0 holds 3 confident rows, rank 1 only 1: a per-rank mean would weight them wrongly
CONFIDENT = torch.tensor([True, True, False, True, False, False, True, False])


def slow_pem(logits: Tensor, targets: Tensor, confident: Tensor) -> Tensor:
    total, count = 0.0, 0
    for i in range(logits.shape[0]):
        if not confident[i]:
            continue
        log_z = torch.log(sum(torch.exp(logits[i, k]) for k in range(K)))
        total = total - sum(targets[i, k] * (logits[i, k] - log_z) for k in range(K))
        count += 1
    return total / count


def pem_inputs(generator: torch.Generator) -> dict[str, Tensor]:
    return {
        "logits": randn(generator, N, K),
        "targets": torch.softmax(randn(generator, N, K), dim=1),
        "confident": CONFIDENT.clone(),
    }


def slow_masked_mean(values: Tensor, selected: Tensor) -> Tensor:
    picked = [values[i, j] for i in range(N) for j in range(L) if selected[i, j]]
    return sum(picked) / len(picked)


def token_inputs(generator: torch.Generator) -> dict[str, Tensor]:
    return {
        "values": randn(generator, N, L),
        "selected": torch.rand(N, L, generator=generator) < 0.4,
    }


CASES = [
    LossCase(
        name="alpro/pem",
        inputs=pem_inputs,
        per_sample=("logits", "targets", "confident"),
        loss=pem_loss,
        reference=slow_pem,
        differentiable=("logits",),
    ),
    LossCase(
        name="alpro/masked_token_mean",
        inputs=token_inputs,
        per_sample=("values", "selected"),
        loss=masked_token_mean,
        reference=slow_masked_mean,
        differentiable=("values",),
    ),
]
