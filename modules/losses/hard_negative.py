"""The explicit hard-negative contrastive loss of Wang & Liu, "Understanding the Behaviour of
Contrastive Loss" (CVPR 2021, its "hard contrastive loss"), on SimCLR's two views.

The paper's contrastive loss with ``P_ik = softmax_k(s_ik / tau)`` has gradients
``dL_i/ds_ij = P_ij / tau`` on a negative and ``dL_i/ds_ii = -(1/tau) sum_{k != i} P_ik`` on the
positive (its gradient analysis): the positive's pull equals the sum of the negatives' pushes,
and a negative's share of that push, the relative penalty ``r_i(s_ij) = exp(s_ij/tau) /
sum_{k != i} exp(s_ik/tau)``, grows with its similarity; the smaller ``tau``, the more of it
falls on the hardest negatives (hardness-awareness). At a large ``tau`` that weighting is nearly
uniform, and the paper restores it by keeping only the hard negatives ``H_i`` in the
denominator:

    L_hard(x_i) = -log [ exp(s_ii/tau) / (exp(s_ii/tau) + sum_{k in H_i} exp(s_ik/tau)) ].

``H_i`` (⚠ UNCONFIRMED: the paper defines ``H_i`` as the negatives above a per-anchor
similarity boundary, but its value could not be read from the paper text reachable here): the
``ceil(fraction * (2N - 2))`` most similar negatives of anchor ``i``, a per-anchor top fraction
(equivalently a per-anchor threshold at that similarity quantile, which, unlike one fixed
threshold, keeps the same number of terms in every denominator whatever the embedding's
spread). ``fraction = 0.25`` by default: our choice, not the paper's number. The
selection is a mask on the similarities, taken without gradient (the chosen set is piecewise
constant in the embeddings); the gradient flows through the kept logits only.

With SimCLR's batch as the negatives (modules/losses/simclr.py, NT-Xent: 2N embeddings, each
row scored against the other 2N - 1, its positive the other view) this is NT-Xent with more
entries of the same logits masked to ``-inf``: with ``fraction = 1`` it is NT-Xent exactly.
DDP: as NT-Xent, local rows of both views against the gathered columns; each row picks its
hard negatives among all the global columns, so 2 processes take the 1-process step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.losses.simclr import nt_xent_logits


def hard_negative_mask(logits: Tensor, positive: Tensor, fraction: float) -> Tensor:
    """BoolTensor like ``logits`` [R, C]: True at each row's ``ceil(fraction * negatives)``
    largest negatives (finite entries other than the row's ``positive`` column; at least one).
    ``logits`` must have every non-negative entry but the positive at ``-inf`` (the sample
    itself in NT-Xent)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    negatives = logits.shape[1] - 2  # all columns but the sample itself and its positive
    keep = max(1, math.ceil(fraction * negatives))
    rows = torch.arange(len(logits), device=logits.device)
    candidates = logits.detach().clone()
    candidates[rows, positive] = float("-inf")
    hardest = candidates.topk(keep, dim=1).indices
    return torch.zeros_like(candidates, dtype=torch.bool).scatter_(1, hardest, True)


def hard_negative_loss(
    a: Tensor, b: Tensor, logit_scale: Tensor | float, fraction: float = 0.25
) -> Tensor:
    """``L_hard`` of two views ``a``, ``b`` [b, D] (this rank's rows, L2-normalised), logits
    ``logit_scale * <z_i, z_k>`` (``logit_scale`` = 1/tau), averaged over the 2N anchors: NT-Xent
    whose denominator keeps the positive and the ``fraction`` hardest negatives of each row."""
    logits, positive = nt_xent_logits(a, b, logit_scale)
    kept = hard_negative_mask(logits, positive, fraction)
    kept[torch.arange(len(logits), device=logits.device), positive] = True
    return F.cross_entropy(logits.masked_fill(~kept, float("-inf")), positive)
