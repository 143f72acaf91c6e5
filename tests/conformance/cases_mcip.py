"""MCIP's multi-caption text ArcFace against a slow reference written from the official code
(Visual-Computing/MCIP ``loss/loss.py``: ``MultiLabelArcMarginProductForText.forward`` and
``TextSoftTargetCrossEntropy``), element by element: the kept captions of every image stacked
in order, ``phi`` with its ``th`` / ``mm`` fallback on each image's own captions, the target
``one_hot / one_hot.sum(1)`` with ``nan_to_num`` (0 for an image without captions), and
``Σ -t log p + 0.1 · max(-(1 - t) log p)`` averaged over images.

The captions are frozen (MCIP encodes them under ``no_grad``) and gathered without gradient:
the 2-process check gives each rank half the images with their captions, and the columns are
the whole batch's captions on both.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from modules.losses.mcip import multi_caption_arcface_loss
from tests.conformance.kit import LossCase, randn

N, K, D = 8, 3, 5
SCALE = 16.0
# kept captions per image: ragged, one image without any (rank 1), all kept on rank 0's row 1
KEEP = torch.tensor(
    [
        [True, True, False],
        [True, True, True],
        [True, False, False],
        [False, False, False],
        [True, True, False],
        [False, False, False],
        [True, False, False],
        [True, True, True],
    ]
)


def slow_mcip_text(
    x: Tensor, captions: Tensor, keep: Tensor, margin: float, weight: float
) -> Tensor:
    """MCIP's forward written out: columns = each image's kept captions, in order."""
    columns, owners = [], []
    for i in range(x.shape[0]):
        for k in range(captions.shape[1]):
            if bool(keep[i, k]):
                columns.append(captions[i, k])
                owners.append(i)
    cos_m, sin_m = math.cos(margin), math.sin(margin)
    th, mm = math.cos(math.pi - margin), math.sin(math.pi - margin) * margin
    total = 0.0
    for i in range(x.shape[0]):
        n_i = sum(1 for o in owners if o == i)
        logits, targets = [], []
        for j, c in enumerate(columns):
            cosine = sum(x[i, d] * c[d] for d in range(D)) / (
                torch.sqrt(sum(x[i, d] ** 2 for d in range(D)))
                * torch.sqrt(sum(c[d] ** 2 for d in range(D)))
            )
            if owners[j] == i:
                sine = torch.sqrt((1.0 - cosine**2).clamp(0, 1))
                phi = cosine * cos_m - sine * sin_m if cosine > th else cosine - mm
                logits.append(SCALE * phi)
            else:
                logits.append(SCALE * cosine)
            targets.append(1.0 / n_i if owners[j] == i else 0.0)  # nan_to_num: n_i = 0 -> 0
        log_z = torch.log(sum(torch.exp(v) for v in logits))
        log_p = [v - log_z for v in logits]
        soft = sum(-t * lp for t, lp in zip(targets, log_p, strict=True))
        hardest = max(
            (-(1.0 - t) * lp for t, lp in zip(targets, log_p, strict=True)),
            key=lambda v: float(v.detach()),
        )
        total = total + soft + weight * hardest
    return total / x.shape[0]


def inputs(generator: torch.Generator) -> dict[str, Tensor]:
    x = randn(generator, N, D)
    captions = randn(generator, N, K, D)
    captions[0, 0] = x[0] + 0.3 * captions[0, 0]  # a close caption: a sizeable positive
    captions[6, 0] = -x[6] + 0.05 * captions[6, 0]  # θ near π: ArcFace's fallback branch
    return {"embeddings": x, "captions": captions, "mask": KEEP.clone()}


def mcip_case(margin: float, weight: float) -> LossCase:
    return LossCase(
        name=f"mcip/text_arcface_m{margin}_w{weight}",
        inputs=inputs,
        per_sample=("embeddings", "captions", "mask"),
        loss=lambda embeddings, captions, mask: multi_caption_arcface_loss(
            embeddings, captions, mask, SCALE, margin, weight
        ),
        reference=lambda embeddings, captions, mask: slow_mcip_text(
            embeddings, captions, mask, margin, weight
        ),
        differentiable=("embeddings",),
        no_grad=("captions",),
    )


CASES = [mcip_case(0.1, 0.1), mcip_case(0.5, 0.1), mcip_case(0.0, 0.0)]
