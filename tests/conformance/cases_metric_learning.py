"""ArcFace/CosFace margin softmax against a per-row, per-class reference with ``acos`` and
``cos(θ + m)`` (insightface's fallback past π - m), one row placed in the fallback branch.

The loss is a mean over samples against replicated class weights and gathers nothing; its
distributed case checks that the per-rank means of the local rows reproduce the whole batch and
that DDP's averaging of the class-weight gradients is exact.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from modules.losses.metric_learning import margin_softmax_loss
from tests.conformance.kit import LossCase, randn

N, CLASSES, D = 8, 4, 5
SCALE = 16.0
LABELS = torch.tensor([2, 0, 1, 3, 0, 2, 1, 0])


def slow_margin_softmax(x: Tensor, w: Tensor, labels: Tensor, margin: float, kind: str) -> Tensor:
    """Per row and class: ``cos θ_j``; the true class gets ``cos(acos(c) + m)`` (arc, or
    ``c - m sin m`` once ``θ + m > π``) or ``c - m`` (cos); then ``-log softmax`` at the label."""
    total = 0.0
    for i in range(x.shape[0]):
        logits = []
        for j in range(w.shape[0]):
            dot = sum(x[i, k] * w[j, k] for k in range(D))
            norms = torch.sqrt(sum(x[i, k] ** 2 for k in range(D))) * torch.sqrt(
                sum(w[j, k] ** 2 for k in range(D))
            )
            c = dot / norms
            if j == int(labels[i]):
                if kind == "cos":
                    c = c - margin
                elif math.acos(float(c.detach())) + margin <= math.pi:
                    c = torch.cos(torch.acos(c) + margin)
                else:
                    c = c - margin * math.sin(margin)
            logits.append(SCALE * c)
        log_z = torch.log(sum(torch.exp(v) for v in logits))
        total = total + log_z - logits[int(labels[i])]
    return total / x.shape[0]


def embeddings(generator: torch.Generator) -> dict[str, Tensor]:
    x = randn(generator, N, D)
    w = randn(generator, CLASSES, D)
    x[5] = -w[LABELS[5]] + 0.05 * x[5]  # θ_y near π (rank 1): ArcFace's fallback branch
    return {"embeddings": x, "class_weights": w, "labels": LABELS.clone()}


def margin_case(kind: str, margin: float) -> LossCase:
    return LossCase(
        name=f"metric_learning/{kind}_margin{margin}",
        inputs=embeddings,
        per_sample=("embeddings", "labels"),
        loss=lambda embeddings, class_weights, labels: margin_softmax_loss(
            embeddings, class_weights, labels, SCALE, margin, kind
        ),
        reference=lambda embeddings, class_weights, labels: slow_margin_softmax(
            embeddings, class_weights, labels, margin, kind
        ),
        differentiable=("embeddings", "class_weights"),
    )


CASES = [margin_case("arc", 0.1), margin_case("arc", 0.5), margin_case("cos", 0.35)]
