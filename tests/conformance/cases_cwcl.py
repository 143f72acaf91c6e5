"""CWCL's continuously weighted loss (continuous and one-hot directions, given weights) against
the spec's sums written out pair by pair; the frozen reference tower gets no gradient."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from modules.losses.cwcl import cwcl_loss
from tests.conformance.kit import F64, LossCase, unit

N, D = 8, 4
IDS = torch.tensor([3, 0, 1, 3, 2, 0, 4, 5])  # ids 0 and 3 have positives on both ranks


def slow_cwcl(
    p: Tensor,
    q: Tensor,
    scale: Tensor,
    ids: Tensor | None,
    weights: Tensor | None,
    forward: str,
    backward: str,
) -> Tensor:
    """``1/2 (L_{U->V} + L_{V->U})`` pair by pair: soft targets ``w_ij / sum_k w_ik`` with
    ``w_ij = 1/2 <q_i/|q_i|, q_j/|q_j|> + 1/2`` (plain floats, no gradient) unless ``weights``
    are given, or one-hot targets uniform over the columns sharing the row's id."""
    n = p.shape[0]
    ids = list(range(n)) if ids is None else ids.tolist()
    rows = [[float(v) for v in q[i]] for i in range(n)]

    def w(i: int, j: int) -> float:
        if weights is not None:
            return float(weights[i, j])
        norm_i = math.sqrt(sum(v * v for v in rows[i]))
        norm_j = math.sqrt(sum(v * v for v in rows[j]))
        return (
            0.5 * sum(a * b for a, b in zip(rows[i], rows[j], strict=True)) / norm_i / norm_j + 0.5
        )

    def direction(a: Tensor, b: Tensor, kind: str) -> Tensor:
        total = 0.0
        for i in range(n):
            logits = [scale * sum(a[i, k] * b[j, k] for k in range(D)) for j in range(n)]
            log_z = torch.log(sum(torch.exp(v) for v in logits))
            if kind == "one_hot":
                positives = [j for j in range(n) if ids[j] == ids[i]]
                targets = [1.0 / len(positives) if j in positives else 0.0 for j in range(n)]
            else:
                norm = sum(w(i, j) for j in range(n))
                targets = [w(i, j) / norm for j in range(n)]
            total = total - sum(targets[j] * (logits[j] - log_z) for j in range(n))
        return total / n

    return 0.5 * (direction(p, q.detach(), forward) + direction(q.detach(), p, backward))


def towers(generator: torch.Generator) -> dict[str, Tensor]:
    return {
        "trained": unit(generator, N, D),
        "reference": unit(generator, N, D),
        "scale": torch.tensor(1 / 0.07, dtype=F64),
        "ids": IDS.clone(),
        # unnormalised weights of each row against the global columns, in (0.1, 1.1)
        "weights": 0.1 + torch.rand(N, N, generator=generator, dtype=F64),
    }


def cwcl_case(
    name: str, forward: str, backward: str, with_ids: bool = False, given_weights: bool = False
) -> LossCase:
    def loss(trained, reference, scale, ids, weights):
        return cwcl_loss(
            trained,
            reference,
            scale,
            ids if with_ids else None,
            weights if given_weights else None,
            forward,
            backward,
        )

    def reference_loss(trained, reference, scale, ids, weights):
        ids, weights = (ids if with_ids else None), (weights if given_weights else None)
        return slow_cwcl(trained, reference, scale, ids, weights, forward, backward)

    return LossCase(
        name=f"cwcl/{name}",
        inputs=towers,
        per_sample=("trained", "reference", "ids", "weights"),  # weights: rows split by rank
        loss=loss,
        reference=reference_loss,
        differentiable=("trained", "scale"),
        no_grad=("reference",),
    )


CASES = [
    cwcl_case("continuous", "continuous", "continuous"),
    cwcl_case("one_hot_ids_then_continuous", "one_hot", "continuous", with_ids=True),
    cwcl_case("continuous_then_one_hot", "continuous", "one_hot"),
    cwcl_case("given_weights", "continuous", "continuous", given_weights=True),
]
