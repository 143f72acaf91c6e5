"""EPCFormer's losses: Expression Alignment (symmetric InfoNCE between audio and text expressions,
positives = equal expression ids) against the contrastive family's scalar reference, and the
per-sample mask losses (focal, Dice) against references written pixel by pixel; all on 2
processes vs 1 (each mask loss is a mean over samples, so the ranks' mean is the whole batch's)."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.epcformer import dice_loss, expression_alignment_loss, sigmoid_focal_loss
from tests.conformance.cases_contrastive import slow_clip
from tests.conformance.kit import F64, LossCase, randn, unit

N, D, H, W = 8, 4, 3, 2
IDS = torch.tensor([0, 3, 1, 3, 2, 0, 4, 0])


def slow_focal(logits: Tensor, target: Tensor, alpha: float, gamma: float) -> Tensor:
    """Per pixel ``-alpha_t (1 - p_t)^gamma log p_t``; mean per sample, then over samples."""
    total = 0.0
    for b in range(logits.shape[0]):
        pixels = 0.0
        for i in range(logits.shape[1]):
            for j in range(logits.shape[2]):
                x, t = logits[b, i, j], float(target[b, i, j])
                p = 1 / (1 + torch.exp(-x))
                p_t = p if t == 1 else 1 - p
                a_t = alpha if t == 1 else 1 - alpha
                pixels = pixels - a_t * (1 - p_t) ** gamma * torch.log(p_t)
        total = total + pixels / (logits.shape[1] * logits.shape[2])
    return total / logits.shape[0]


def slow_dice(logits: Tensor, target: Tensor) -> Tensor:
    """``1 - (2 sum p t + 1) / (sum p + sum t + 1)`` per sample, pixel by pixel; mean."""
    total = 0.0
    for b in range(logits.shape[0]):
        both = ps = ts = 0.0
        for i in range(logits.shape[1]):
            for j in range(logits.shape[2]):
                p = 1 / (1 + torch.exp(-logits[b, i, j]))
                t = float(target[b, i, j])
                both, ps, ts = both + p * t, ps + p, ts + t
        total = total + 1 - (2 * both + 1) / (ps + ts + 1)
    return total / logits.shape[0]


def expressions(generator: torch.Generator) -> dict[str, Tensor]:
    return {
        "audio": unit(generator, N, D),
        "text": unit(generator, N, D),
        "scale": torch.tensor(1 / 0.07, dtype=F64),
        "ids": IDS.clone(),
    }


def masks(generator: torch.Generator) -> dict[str, Tensor]:
    return {
        "logits": 2 * randn(generator, N, H, W),
        "target": (torch.rand(N, H, W, generator=generator) < 0.4).to(F64),
    }


CASES = [
    LossCase(
        name="epcformer/expression_alignment",
        inputs=expressions,
        per_sample=("audio", "text", "ids"),
        loss=lambda audio, text, scale, ids: expression_alignment_loss(audio, text, scale, ids),
        reference=lambda audio, text, scale, ids: slow_clip(audio, text, scale, ids, 0.0),
        differentiable=("audio", "text", "scale"),
    ),
    LossCase(
        name="epcformer/focal",
        inputs=masks,
        per_sample=("logits", "target"),
        loss=lambda logits, target: sigmoid_focal_loss(logits, target, 0.25, 2.0),
        reference=lambda logits, target: slow_focal(logits, target, 0.25, 2.0),
        differentiable=("logits",),
    ),
    LossCase(
        name="epcformer/dice",
        inputs=masks,
        per_sample=("logits", "target"),
        loss=lambda logits, target: dice_loss(logits, target),
        reference=lambda logits, target: slow_dice(logits, target),
        differentiable=("logits",),
    ),
]
