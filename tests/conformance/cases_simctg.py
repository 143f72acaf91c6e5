"""The causal LM's losses (modules/losses/simctg.py) against the loop references of
tests/test_causal_lm.py. Rank 0 holds longer documents than rank 1, so the per-rank token and
pair counts differ: the global-count normalisation must give the one-process mean."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.simctg import next_token_loss, simctg_loss
from tests.conformance.kit import LossCase, randn
from tests.test_causal_lm import reference_next_token, reference_simctg

N, T, D, V = 4, 5, 3, 6  # global documents (2 per rank), tokens, state width, vocabulary


def inputs(generator: torch.Generator) -> dict[str, Tensor]:
    lengths = torch.tensor([5, 4, 2, 3])  # rank 0: 9 tokens, rank 1: 5
    mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)
    ids = torch.randint(1, V, (N, T), generator=generator).masked_fill(~mask, 0)
    return {
        "hidden": randn(generator, N, T, D),
        "logits": randn(generator, N, T, V),
        "ids": ids,
        "mask": mask,
    }


def simctg(hidden, logits, ids, mask):
    return simctg_loss(hidden, mask, 0.8)


def simctg_reference(hidden, logits, ids, mask):
    return reference_simctg(hidden, mask, 0.8)


def mle(hidden, logits, ids, mask):
    return next_token_loss(logits, ids, mask)


def mle_reference(hidden, logits, ids, mask):
    return reference_next_token(logits, ids, mask)


PER_SAMPLE = ("hidden", "logits", "ids", "mask")
CASES = [
    LossCase(
        name="simctg/margin",
        inputs=inputs,
        per_sample=PER_SAMPLE,
        loss=simctg,
        reference=simctg_reference,
        differentiable=("hidden",),
    ),
    LossCase(
        name="simctg/next_token",
        inputs=inputs,
        per_sample=PER_SAMPLE,
        loss=mle,
        reference=mle_reference,
        differentiable=("logits",),
    ),
]
