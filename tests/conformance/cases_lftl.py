"""LFTL's losses (modules/losses/lftl.py) against the slow references of
tests/test_losses_lftl.py. L_VPA is a per-sample mean against a replicated anchor memory (a
constant), so it needs no gather; L_IM's marginal entropy is a statistic of the local batch, as
in the official code (one GPU), so it opts out of the 2-process check."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.lftl import im_loss, vpa_loss
from tests.conformance.kit import LossCase, randn
from tests.test_losses_lftl import slow_im, slow_vpa

N, D, A, C = 8, 5, 6, 4


def _vpa_inputs(generator: torch.Generator) -> dict[str, Tensor]:
    return {"embeddings": randn(generator, N, D), "memory": randn(generator, A, D)}


def _im_inputs(generator: torch.Generator) -> dict[str, Tensor]:
    return {"logits": randn(generator, N, C)}


CASES = [
    LossCase(
        name="lftl/vpa",
        inputs=_vpa_inputs,
        per_sample=("embeddings",),
        loss=vpa_loss,
        reference=slow_vpa,
        differentiable=("embeddings",),
        no_grad=("memory",),
        atol=1e-8,
    ),
    LossCase(
        name="lftl/im",
        inputs=_im_inputs,
        per_sample=("logits",),
        loss=im_loss,
        reference=slow_im,
        differentiable=("logits",),
        distributed=False,
        atol=1e-8,
        note="the marginal entropy is over the local batch, as in the official code (one GPU)",
    ),
]
