"""CCRK's 1-to-K contrastive loss (each image's own K captions, or id-defined positives shared
by repeated images) against the spec's formulas written scalar by scalar."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.one_to_k import one_to_k_loss
from tests.conformance.kit import F64, LossCase, unit

N, K, D = 6, 3, 4
IDS = torch.tensor([5, 1, 1, 2, 5, 3])  # id 5 on both ranks


def slow_one_to_k(image: Tensor, text: Tensor, scale: Tensor, ids: Tensor | None) -> Tensor:
    """``L_i2t = -(1/B) sum_i sum_{(j,l) positive} K/|P_i| log softmax_{(j,l)}(S_i)`` over all
    B K captions and ``L_t2i = -(1/KB) sum_{(i,k)} mean_{j positive} log softmax_j(S_(i,k))``,
    ``L = (L_i2t + L_t2i) / (2K)``; an image's positives are the captions of every image with its
    id (its own K captions when ``ids`` is None)."""
    b, k, d = text.shape
    ids = list(range(b)) if ids is None else ids.tolist()

    def s(i: int, j: int, l: int) -> Tensor:
        return scale * sum(image[i, c] * text[j, l, c] for c in range(d))

    l_i2t = 0.0
    for i in range(b):
        logits = {(j, l): s(i, j, l) for j in range(b) for l in range(k)}
        log_z = torch.log(sum(torch.exp(v) for v in logits.values()))
        positives = [(j, l) for (j, l) in logits if ids[j] == ids[i]]
        l_i2t = l_i2t - sum(k / len(positives) * (logits[p] - log_z) for p in positives)
    l_t2i = 0.0
    for i in range(b):
        for l in range(k):
            logits = [s(j, i, l) for j in range(b)]
            log_z = torch.log(sum(torch.exp(v) for v in logits))
            positives = [j for j in range(b) if ids[j] == ids[i]]
            l_t2i = l_t2i - sum((logits[j] - log_z) / len(positives) for j in positives)
    return (l_i2t / b + l_t2i / (k * b)) / (2 * k)


def inputs(generator: torch.Generator) -> dict[str, Tensor]:
    return {
        "image": unit(generator, N, D),
        "text": unit(generator, N, K, D),
        "scale": torch.tensor(5.0, dtype=F64),
        "ids": IDS.clone(),
    }


def one_to_k_case(name: str, with_ids: bool) -> LossCase:
    return LossCase(
        name=f"one_to_k/{name}",
        inputs=inputs,
        per_sample=("image", "text", "ids"),
        loss=lambda image, text, scale, ids: one_to_k_loss(
            image, text, scale, ids if with_ids else None
        ),
        reference=lambda image, text, scale, ids: slow_one_to_k(
            image, text, scale, ids if with_ids else None
        ),
        differentiable=("image", "text", "scale"),
    )


CASES = [one_to_k_case("own_captions", with_ids=False), one_to_k_case("ids", with_ids=True)]
