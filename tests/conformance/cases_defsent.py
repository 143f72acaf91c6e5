"""DefSent+'s entry loss against the row-by-row log-softmax of tests/test_losses_defsent.py:
each rank holds its definitions and the whole (frozen, replicated) entry table."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.defsent import entry_loss
from tests.conformance.kit import LossCase, randn
from tests.test_losses_defsent import slow_entry_loss

DEFINITIONS, ENTRIES, D = 6, 5, 3


def definitions(generator: torch.Generator) -> dict[str, Tensor]:
    return {
        "sentences": randn(generator, DEFINITIONS, D),
        "entries": 3 * randn(generator, ENTRIES, D),
        "targets": torch.randint(0, ENTRIES, (DEFINITIONS,), generator=generator),
    }


def reference(sentences, entries, targets):
    """One definition at a time: log sum_k exp(s . e_k) - s . e_y (checked against the plain
    Python value of ``slow_entry_loss``)."""
    rows = [
        torch.logsumexp(entries.detach() @ s, dim=0) - entries.detach()[y] @ s
        for s, y in zip(sentences, targets.tolist(), strict=True)
    ]
    value = torch.stack(rows).mean()
    assert abs(value.item() - slow_entry_loss(sentences.detach(), entries, targets)) < 1e-10
    return value


CASES = [
    LossCase(
        name="defsent/entry_loss",
        inputs=definitions,
        per_sample=("sentences", "targets"),
        loss=entry_loss,
        reference=reference,
        differentiable=("sentences",),
        no_grad=("entries",),
    )
]
