"""EPCFormer's losses (Chen et al., "EPCFormer: Expression Prompt Collaboration Transformer for
Universal Referring Video Object Segmentation", arXiv 2308.04162): the Expression Alignment
(EA) term between audio and text expressions of the same object, and the mask losses of the
ReferFormer-style segmentation head it is added to (sigmoid focal + Dice).

The EA equation is UNCONFIRMED (abstract only; methods/part2.md Sec. 65): the spec's expected
form, a symmetric InfoNCE over the batch on pooled, projected expression features,

    L_EA = 1/2 [NCE_{a->t} + NCE_{t->a}],

is :func:`~modules.losses.contrastive.clip_loss` (the platform's one InfoNCE; DDP: local rows,
gathered columns), with items that say the same thing as shared positives.

The mask losses follow ReferFormer / DETR (``sigmoid_focal_loss``, ``dice_loss`` in their
``models/segmentation.py``): each averaged over a sample's pixels, then over the samples.
"""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.contrastive import clip_loss


def expression_alignment_loss(
    audio: Tensor, text: Tensor, logit_scale: Tensor | float, ids: Tensor | None = None
) -> Tensor:
    """EA: symmetric InfoNCE between L2-normalised audio [B, D] and text [B, D] expression
    embeddings; ``ids`` [B]: equal ids are positives (default: the same item only)."""
    return clip_loss(audio, text, logit_scale, ids)


def sigmoid_focal_loss(
    logits: Tensor, target: Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """Focal loss (Lin et al. 2017) on per-pixel logits [B, ...] against {0, 1} targets:
    ``-alpha_t (1 - p_t)^gamma log p_t`` averaged over each sample's pixels, then over samples
    (``alpha < 0``: no alpha weighting)."""
    prob = logits.sigmoid()
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(1).mean(dim=1).mean()


def dice_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Soft Dice loss ``1 - (2 sum p t + 1) / (sum p + sum t + 1)`` per sample (p = sigmoid of
    the logits [B, ...], t the {0, 1} target), averaged over samples."""
    prob = logits.sigmoid().flatten(1)
    target = target.flatten(1)
    numerator = 2 * (prob * target).sum(dim=1) + 1
    denominator = prob.sum(dim=1) + target.sum(dim=1) + 1
    return (1 - numerator / denominator).mean()
