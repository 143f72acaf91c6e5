"""MV-InfoNCE, MV-DHEL and the pairwise averages (modules/losses/multi_view.py) against the
slow loops of tests/test_losses_multi_view.py, K = 3 views: 2 processes (local rows, gathered
columns of every view) must give the one-process value and gradients."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.multi_view import (
    mv_dhel_loss,
    mv_infonce_loss,
    pairwise_dhel_loss,
    pairwise_nt_xent_loss,
)
from tests.conformance.kit import F64, LossCase, unit
from tests.test_losses_multi_view import slow_mv_dhel, slow_mv_infonce
from tests.test_simclr import slow_nt_xent

N, D = 6, 4


def three_views(generator: torch.Generator) -> dict[str, Tensor]:
    return {
        "v0": unit(generator, N, D),
        "v1": unit(generator, N, D),
        "v2": unit(generator, N, D),
        "logit_scale": torch.tensor(2.5, dtype=F64),
    }


def slow_pairwise(slow, v0, v1, v2, logit_scale):  # noqa: ANN001, ANN201
    pairs = ((v0, v1), (v0, v2), (v1, v2))
    return sum(slow(a, b, logit_scale) for a, b in pairs) / 3


def _case(name: str, loss, reference) -> LossCase:  # noqa: ANN001
    return LossCase(
        name=f"multi_view/{name}",
        inputs=three_views,
        per_sample=("v0", "v1", "v2"),
        loss=lambda v0, v1, v2, logit_scale: loss([v0, v1, v2], logit_scale),
        reference=reference,
        differentiable=("v0", "v1", "v2", "logit_scale"),
    )


CASES = [
    _case(
        "mv_infonce",
        mv_infonce_loss,
        lambda v0, v1, v2, logit_scale: slow_mv_infonce([v0, v1, v2], logit_scale),
    ),
    _case(
        "mv_dhel",
        mv_dhel_loss,
        lambda v0, v1, v2, logit_scale: slow_mv_dhel([v0, v1, v2], logit_scale),
    ),
    _case(
        "pairwise_nt_xent",
        pairwise_nt_xent_loss,
        lambda v0, v1, v2, logit_scale: slow_pairwise(slow_nt_xent, v0, v1, v2, logit_scale),
    ),
    _case(
        "pairwise_dhel",
        pairwise_dhel_loss,
        lambda v0, v1, v2, logit_scale: slow_pairwise(
            lambda a, b, s: slow_mv_dhel([a, b], s), v0, v1, v2, logit_scale
        ),
    ),
]
