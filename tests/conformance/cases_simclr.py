"""SimCLR's NT-Xent against the slow loop of Eq. 1 (tests/test_simclr.py), on unit vectors and
through the projection head, whose BatchNorm statistics are those of the global batch
(modules/simclr.py ``GlobalBatchNorm1d``): 2 processes must take the one-process step."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.losses.simclr import nt_xent_loss
from modules.simclr import GlobalBatchNorm1d
from tests.conformance.kit import F64, LossCase, randn, unit
from tests.test_simclr import slow_nt_xent

N, D, HIDDEN = 8, 4, 6


def views(generator: torch.Generator) -> dict[str, Tensor]:
    return {
        "a": unit(generator, N, D),
        "b": unit(generator, N, D),
        "logit_scale": torch.tensor(2.5, dtype=F64),
    }


def head_inputs(generator: torch.Generator) -> dict[str, Tensor]:
    """Representations h of both views and the head's weights (Linear, BN affine, Linear)."""
    return {
        "a": randn(generator, N, D),
        "b": randn(generator, N, D),
        "w1": randn(generator, HIDDEN, D),
        "gamma": 1.0 + 0.1 * randn(generator, HIDDEN),
        "beta": 0.1 * randn(generator, HIDDEN),
        "w2": randn(generator, D, HIDDEN),
        "scale": torch.tensor(2.5, dtype=F64),
    }


def projected(a: Tensor, b: Tensor, w1: Tensor, w2: Tensor, norm) -> tuple[Tensor, Tensor]:  # noqa: ANN001
    """normalize(W2 relu(norm(W1 h))) of both views, normalised together (one BN batch)."""
    z = F.normalize(F.relu(norm(torch.cat([a, b]) @ w1.T)) @ w2.T, dim=1)
    return z[: len(a)], z[len(a) :]


def head_loss(a, b, w1, gamma, beta, w2, scale):  # noqa: ANN001, ANN201
    bn = GlobalBatchNorm1d(HIDDEN, affine=False).double().train()
    return nt_xent_loss(*projected(a, b, w1, w2, lambda x: bn(x) * gamma + beta), scale)


def head_reference(a, b, w1, gamma, beta, w2, scale):  # noqa: ANN001, ANN201
    def norm(x: Tensor) -> Tensor:
        mean, var = x.mean(dim=0), x.var(dim=0, unbiased=False)
        return (x - mean) / torch.sqrt(var + 1e-5) * gamma + beta

    return slow_nt_xent(*projected(a, b, w1, w2, norm), scale)


CASES = [
    LossCase(
        name="simclr/nt_xent",
        inputs=views,
        per_sample=("a", "b"),
        loss=nt_xent_loss,
        reference=lambda a, b, logit_scale: slow_nt_xent(a, b, logit_scale),
        differentiable=("a", "b", "logit_scale"),
    ),
    LossCase(
        name="simclr/nt_xent_through_the_head",
        inputs=head_inputs,
        per_sample=("a", "b"),
        loss=head_loss,
        reference=head_reference,
        differentiable=("a", "b", "w1", "gamma", "beta", "w2", "scale"),
    ),
]
