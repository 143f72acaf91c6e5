"""The STRUCTURE regulariser (levels, weightings, both JS forms) against an element-by-element
reference: normalise, centre, softmax rows, multi-hop walks, KL sums."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.structure import structure_regulariser
from tests.conformance.kit import LossCase, randn

N, D_ORIGINAL, D_ALIGNED = 6, 5, 3
TAU = 0.5  # a soft neighbourhood, so every entry matters


def slow_structure(
    original: Tensor, aligned: Tensor, levels: int, weighting: str, js_form: str, eps=1e-12
) -> Tensor:
    """``R(O, A)`` one scalar at a time (lists of 0-dim tensors, so autograd follows)."""

    def stochastic(x: Tensor) -> list[list[Tensor]]:
        n, d = x.shape
        unit = [
            [x[i, c] / torch.sqrt(sum(x[i, e] ** 2 for e in range(d))) for c in range(d)]
            for i in range(n)
        ]
        mean = [sum(unit[i][c] for i in range(n)) / n for c in range(d)]
        centred = [[unit[i][c] - mean[c] for c in range(d)] for i in range(n)]
        out = []
        for i in range(n):
            logits = [sum(centred[i][c] * centred[j][c] for c in range(d)) / TAU for j in range(n)]
            exps = [torch.exp(v) for v in logits]
            total = sum(exps)
            out.append([e / total for e in exps])
        return out

    def matmul(x, y):
        n = len(x)
        return [[sum(x[i][m] * y[m][j] for m in range(n)) for j in range(n)] for i in range(n)]

    def kl(target, other):  # KL(target || other), eps in both logs, mean over rows
        n = len(target)
        total = 0.0
        for i in range(n):
            for j in range(n):
                t = target[i][j] + eps
                total = total + t * (torch.log(t) - torch.log(other[i][j] + eps))
        return total / n

    p1, q1 = stochastic(original), stochastic(aligned)
    p, q, total = p1, q1, 0.0
    for level in range(1, levels + 1):
        if level > 1:
            p, q = matmul(p, p1), matmul(q, q1)
        m = [[0.5 * (p[i][j] + q[i][j]) for j in range(len(p))] for i in range(len(p))]
        if js_form == "code":
            divergence = 0.5 * (kl(m, q) + kl(m, p))
        else:
            divergence = 0.5 * (kl(p, m) + kl(q, m))
        total = total + (divergence / level if weighting == "inverse" else divergence)
    return total / levels


def features(generator: torch.Generator) -> dict[str, Tensor]:
    """Frozen and aligned features of different widths (only row-to-row relations count)."""
    return {
        "original": randn(generator, N, D_ORIGINAL),
        "aligned": randn(generator, N, D_ALIGNED),
    }


def structure_case(levels: int, weighting: str, js_form: str) -> LossCase:
    return LossCase(
        name=f"structure/levels{levels}_{weighting}_{js_form}",
        inputs=features,
        per_sample=("original", "aligned"),
        loss=lambda original, aligned: structure_regulariser(
            original, aligned, levels, TAU, weighting, js_form
        ),
        reference=lambda original, aligned: slow_structure(
            original, aligned, levels, weighting, js_form
        ),
        # the method detaches the frozen side; the function itself is differentiable in both
        differentiable=("original", "aligned"),
    )


CASES = [
    structure_case(1, "none", "code"),
    structure_case(2, "none", "textbook"),
    structure_case(3, "inverse", "code"),
]
