"""Losses of "Improved baselines for vision-language pre-training" (Fini et al. 2023, CLIP🚀),
transcribed from the official ``losses.py`` (facebookresearch/clip-rocket: ``CL2LLoss``,
``BarLIPLoss``, ``SiamLIPLoss``, ``SwALIPLoss``).

Notation: global embeddings (image, caption) and A augmented views of each; ``h`` the views
through the separate local projectors, L2-normalised.

- CL2L: ``L_I = (L_g^I + A L_l^I) / (1 + A)``, ``L_T`` likewise, ``L = ½ (L_I + L_T)``, times 2
  in "sum" mode. ``L_g`` is InfoNCE on the global pair at the global scale (no label smoothing
  in the official code); ``L_l^I`` averages InfoNCE image-view -> text-view over all A x A view
  pairs at the separate local scale with label smoothing. Since each part is linear,
  ``L = [CLIP_g + A mean_{a,b} CLIP(h^I_a, h^T_b)] / (1 + A)`` with the symmetric
  :func:`~modules.losses.contrastive.clip_loss`, which this module reuses.
- BarLIP: Barlow Twins between image and text projections,
  ``s [sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2]``, ``C = z_I^T z_T / N`` (the projectors
  end in BatchNorm), averaged over the global pair and the A x A view pairs.
- SiamLIP/BYOLIP: ``2 - 2 cos(p, sg(v))``, the predictor output of one modality against the
  stopped projection of the other, both directions, global pair and A x A view pairs, averaged.
- SwALIP: the other modality's batch serves as prototypes; Sinkhorn-Knopp on the cosine scores
  of one view pair gives the soft targets of the swapped view pair.

Every loss takes this rank's local rows (already through the method's heads) and gathers what
it needs inside: CL2L as :func:`~modules.losses.contrastive.clip_loss`; BarLIP's
cross-correlation needs the whole batch, so its inputs are gathered with gradients; SiamLIP is a
mean over samples, exact per rank without a gather; SwALIP scores local rows against gathered
columns and takes its (detached) Sinkhorn targets from the whole gathered score matrix.
"""

from __future__ import annotations

import torch
from torch import Tensor

from modules.distributed import gather_with_grad, rank
from modules.losses.contrastive import clip_loss, soft_target_cross_entropy
from modules.losses.sinkhorn import sinkhorn_knopp


def cl2l_loss(
    image: Tensor,
    text: Tensor,
    image_views: list[Tensor],
    text_views: list[Tensor],
    scale: Tensor | float,
    local_scale: Tensor | float,
    ids: Tensor | None = None,
    label_smoothing: float = 0.0,
    local_label_smoothing: float = 0.1,
    reduction: str = "sum",
) -> Tensor:
    """CL2L (``CL2LLoss.forward``) on L2-normalised local rows: ``image``/``text`` [B, D] global,
    ``image_views``/``text_views`` A tensors [B, D] each (the local projections)."""
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    if len(image_views) != len(text_views):
        raise ValueError(f"{len(image_views)} image views vs {len(text_views)} text views")
    views = len(image_views)
    loss = clip_loss(image, text, scale, ids, label_smoothing)
    if views:
        local = sum(
            clip_loss(a, b, local_scale, ids, local_label_smoothing)
            for a in image_views
            for b in text_views
        )
        loss = (loss + local / views) / (1 + views)  # A * (sum / A^2)
    return 2.0 * loss if reduction == "sum" else loss


def barlow_twins(
    z1: Tensor, z2: Tensor, off_diagonal_weight: float = 5e-3, scale: float = 0.025
) -> Tensor:
    """``scale * [sum_i (C_ii - 1)^2 + off_diagonal_weight * sum_{i!=j} C_ij^2]`` with the
    cross-correlation ``C = z1^T z2 / N`` of [N, D] inputs (``BarLIPLoss.barlip_loss``)."""
    corr = z1.T @ z2 / z1.shape[0]
    eye = torch.eye(corr.shape[0], device=corr.device, dtype=corr.dtype)
    weights = off_diagonal_weight + (1.0 - off_diagonal_weight) * eye
    return scale * (weights * (corr - eye).pow(2)).sum()


def barlip_loss(
    image: Tensor,
    text: Tensor,
    image_views: list[Tensor],
    text_views: list[Tensor],
    off_diagonal_weight: float = 5e-3,
    scale: float = 0.025,
) -> Tensor:
    """Barlow Twins averaged over the global pair and every (image view, text view) pair, on the
    global batch: local rows [b, D] in, each gathered with gradients (the official code
    all-reduces the cross-correlation instead; same value)."""
    image, text = gather_with_grad(image), gather_with_grad(text)
    image_views = [gather_with_grad(v) for v in image_views]
    text_views = [gather_with_grad(v) for v in text_views]
    pairs = [(image, text), *((a, b) for a in image_views for b in text_views)]
    return sum(barlow_twins(a, b, off_diagonal_weight, scale) for a, b in pairs) / len(pairs)


def negative_cosine(p: Tensor, v: Tensor) -> Tensor:
    """``2 - 2 mean_i cos(p_i, sg(v_i))``: no gradient reaches the target ``v``."""
    p = torch.nn.functional.normalize(p, dim=-1)
    v = torch.nn.functional.normalize(v.detach(), dim=-1)
    return 2 - 2 * (p * v).sum(dim=1).mean()


def siamlip_loss(
    predicted: tuple[Tensor, Tensor],
    targets: tuple[Tensor, Tensor],
    predicted_views: tuple[list[Tensor], list[Tensor]],
    target_views: tuple[list[Tensor], list[Tensor]],
) -> Tensor:
    """``SiamLIPLoss``: mean of :func:`negative_cosine` over (image prediction, text target),
    (text prediction, image target) for the global pair and for all A x A view pairs.
    Each argument is an (image, text) pair; predictions map one modality to the other. A mean
    over samples: the per-rank mean of the local rows is exact under DDP, nothing is gathered."""
    (p_image, p_text), (v_image, v_text) = predicted, targets
    terms = [negative_cosine(p_image, v_text), negative_cosine(p_text, v_image)]
    for p_side, v_side in ((0, 1), (1, 0)):
        terms += [
            negative_cosine(p, v) for p in predicted_views[p_side] for v in target_views[v_side]
        ]
    return sum(terms) / len(terms)


def swalip_loss(
    image_views: list[Tensor],
    text_views: list[Tensor],
    local_scale: Tensor | float,
    epsilon: float = 0.05,
    iterations: int = 3,
) -> Tensor:
    """``SwALIPLoss``: for view pair (a, b), scores ``h^I_a h^T_b^T`` (and text -> image) at
    ``local_scale`` are trained towards the Sinkhorn targets of the swapped pair
    ``(a + 1 mod A, b + 1 mod A)`` (the official code's ``1 - a`` for its A = 2), symmetric,
    averaged over the A^2 pairs. Views: this rank's L2-normalised rows [b, D]; they are scored
    against the gathered columns of the other modality, and the Sinkhorn targets of the local
    rows come from the whole gathered score matrix (its marginals span the global batch, as the
    official code's all-reduced Sinkhorn)."""
    views = len(image_views)
    if views == 0 or views != len(text_views):
        raise ValueError(f"need as many image as text views (>0), got {views}, {len(text_views)}")
    everyone = {
        side: [gather_with_grad(h) for h in hs]
        for side, hs in (("image", image_views), ("text", text_views))
    }
    batch = image_views[0].shape[0]
    own = slice(rank() * batch, (rank() + 1) * batch)

    def targets_of(rows: Tensor, cols: Tensor) -> Tensor:
        return sinkhorn_knopp(rows.detach() @ cols.detach().T, epsilon, iterations)[own]

    scores = {
        (a, b): (image_views[a] @ everyone["text"][b].T, text_views[a] @ everyone["image"][b].T)
        for a in range(views)
        for b in range(views)
    }
    targets = {
        (a, b): (
            targets_of(everyone["image"][a], everyone["text"][b]),
            targets_of(everyone["text"][a], everyone["image"][b]),
        )
        for a, b in scores
    }
    loss = 0.0
    for (a, b), (image_to_text, text_to_image) in scores.items():
        swapped = targets[(a + 1) % views, (b + 1) % views]
        loss = loss + 0.5 * (
            soft_target_cross_entropy(local_scale * image_to_text, swapped[0])
            + soft_target_cross_entropy(local_scale * text_to_image, swapped[1])
        )
    return loss / views**2
