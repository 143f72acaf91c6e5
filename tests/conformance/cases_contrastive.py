"""CLIP's symmetric InfoNCE (diagonal, id-defined positives, label smoothing, chunked tiles) and
ALIGN's summed form against a slow reference written scalar by scalar."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.contrastive import align_loss, clip_loss
from tests.conformance.kit import F64, LossCase, unit

N, D = 8, 4
# id 5 three times (rows 0, 5, 6) and id 2 twice (rows 3, 4) across both ranks; id 1 twice on
# rank 0; id 3 once
IDS = torch.tensor([5, 1, 1, 2, 2, 5, 5, 3])
PER_SAMPLE = ("image", "text", "ids")
DIFFERENTIABLE = ("image", "text", "scale")


def slow_clip(image: Tensor, text: Tensor, scale: Tensor, ids: Tensor | None, eps: float) -> Tensor:
    """Symmetric InfoNCE, one row at a time in plain Python loops over scalars: each row's
    target is uniform over the columns with its id (its own pair when ``ids`` is None), mixed
    with ``eps`` / N of label smoothing."""
    n = image.shape[0]
    ids = list(range(n)) if ids is None else ids.tolist()

    def direction(rows: Tensor, cols: Tensor) -> Tensor:
        total = 0.0
        for i in range(n):
            logits = [
                scale * sum(rows[i, k] * cols[j, k] for k in range(rows.shape[1])) for j in range(n)
            ]
            top = max(float(v.detach()) for v in logits)
            lse = top + torch.log(sum(torch.exp(v - top) for v in logits))
            positives = [j for j in range(n) if ids[j] == ids[i]]
            for j in range(n):
                q = eps / n + ((1.0 - eps) / len(positives) if j in positives else 0.0)
                total = total - q * (logits[j] - lse)
        return total / n

    return 0.5 * (direction(image, text) + direction(text, image))


def pairs(generator: torch.Generator) -> dict[str, Tensor]:
    return {
        "image": unit(generator, N, D),
        "text": unit(generator, N, D),
        "scale": torch.tensor(3.7, dtype=F64),
        "ids": IDS.clone(),
    }


def clip_case(name: str, with_ids: bool, eps: float, block: int | None = None) -> LossCase:
    def loss(image, text, scale, ids):
        return clip_loss(
            image, text, scale, ids if with_ids else None, label_smoothing=eps, block_elements=block
        )

    def reference(image, text, scale, ids):
        return slow_clip(image, text, scale, ids if with_ids else None, eps)

    return LossCase(
        name=f"contrastive/{name}",
        inputs=pairs,
        per_sample=PER_SAMPLE,
        loss=loss,
        reference=reference,
        differentiable=DIFFERENTIABLE,
    )


CASES = [
    clip_case("clip_diagonal", with_ids=False, eps=0.0),
    clip_case("clip_diagonal_smoothing", with_ids=False, eps=0.1),
    clip_case("clip_multi_positive", with_ids=True, eps=0.0),
    clip_case("clip_multi_positive_smoothing", with_ids=True, eps=0.1),
    # tiles of 3 and 5 logits: several tiles per row and per column of a rank's [4, 8] block
    clip_case("clip_chunked_diagonal", with_ids=False, eps=0.1, block=3),
    clip_case("clip_chunked_multi_positive", with_ids=True, eps=0.1, block=5),
    LossCase(
        name="contrastive/align_sum",
        inputs=pairs,
        per_sample=PER_SAMPLE,
        loss=lambda image, text, scale, ids: align_loss(image, text, scale, ids, 0.1),
        reference=lambda image, text, scale, ids: 2.0 * slow_clip(image, text, scale, ids, 0.1),
        differentiable=DIFFERENTIABLE,
    ),
    LossCase(
        name="contrastive/align_mean_chunked",
        inputs=pairs,
        per_sample=PER_SAMPLE,
        loss=lambda image, text, scale, ids: align_loss(
            image, text, scale, reduction="mean", block_elements=4
        ),
        reference=lambda image, text, scale, ids: slow_clip(image, text, scale, None, 0.0),
        differentiable=DIFFERENTIABLE,
    ),
]
