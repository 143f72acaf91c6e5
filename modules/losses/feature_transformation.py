"""MoCo's queue InfoNCE with Feature Transformation (Zhu et al., "Improving Contrastive Learning
by Visualizing Feature Transformation", ICCV 2021): *positive extrapolation* and *negative
interpolation* applied to the features between the heads and the loss.

MoCo (He et al., CVPR 2020, Eq. 1; MoCo v2 with an MLP head and tau = 0.2): query ``q`` [b, D]
(online encoder), key ``k`` [b, D] (momentum encoder, no gradient), queue ``Q`` [K, D] of past
keys, all L2-normalised;

    L = CE([q . k, q . Q^T] / tau, target 0)         (the positive in column 0).

FT, as the official code does it (``memory/mem_moco.py``, ``RGBMoCo_dropmix_norm`` with the
README's ``--mixnorm --mixnorm_target posneg --sep_alpha --pos_alpha 2.0 --neg_alpha 1.6
--mask_distribution beta --expolation_mask`` and the default ``--dim_mask none``):

- positive extrapolation: ``lambda = 1 + Beta(alpha_p, alpha_p)`` in [1, 2], one scalar per
  step, ``q^ = lambda q + (1 - lambda) k``, ``k^ = lambda k + (1 - lambda) q``. For unit q, k
  with ``c = q . k``: ``q^ . k^ = c - 2 lambda (lambda - 1)(1 - c) <= c``, a harder positive;
  the gradient reaches ``q`` through both ``q^`` and ``k^`` (the code keeps q's graph in k^);
- negative interpolation: ``mu ~ Beta(alpha_n, alpha_n)``, one scalar per step, and a random
  permutation ``pi`` of the queue rows: ``Q^ = mu Q + (1 - mu) Q[pi]``;
- no re-normalisation after mixing (``postmix_norm`` off); logits ``[q^ . k^, q^ . Q^^T] / tau``.

The stored queue is never mixed (the mixing is in the logits only) and is refilled with the
*un-mixed* keys (the caller's job: modules/feature_transformation.py).

DDP: the queue is the same on every rank and the key is the query's own, so the loss is a mean
over this rank's rows with nothing gathered; the mean over ranks (equal local batches) is the
whole batch's mean. ``lambda``, ``mu`` and ``pi`` must be the same on every rank:
:func:`draw_transformation` derives them from a seed and the step only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Transformation:
    """One step's draw: ``lam`` (positive extrapolation, 1 = none), ``mu`` (negative
    interpolation, 1 = none) and the queue permutation ``perm`` [K]."""

    lam: float
    mu: float
    perm: Tensor


def draw_transformation(
    seed: int,
    step: int,
    queue_size: int,
    alpha_p: float | None,
    alpha_n: float | None,
) -> Transformation:
    """``lambda = 1 + Beta(alpha_p, alpha_p)``, ``mu ~ Beta(alpha_n, alpha_n)`` and a random
    permutation of ``queue_size`` rows, from a generator seeded by ``(seed, step)`` alone (the
    same draw on every rank and in a one-process run). ``alpha_p`` / ``alpha_n`` None: that
    transformation off (``lambda = 1`` / ``mu = 1``)."""
    rng = np.random.default_rng([seed, step])
    lam = 1.0 + float(rng.beta(alpha_p, alpha_p)) if alpha_p is not None else 1.0
    mu = float(rng.beta(alpha_n, alpha_n)) if alpha_n is not None else 1.0
    perm = torch.from_numpy(rng.permutation(queue_size))
    return Transformation(lam, mu, perm)


def extrapolate_positives(q: Tensor, k: Tensor, lam: float) -> tuple[Tensor, Tensor]:
    """``(lambda q + (1 - lambda) k, lambda k + (1 - lambda) q)``: for lambda > 1 the pair
    moves apart along q - k (positive extrapolation)."""
    return lam * q + (1 - lam) * k, lam * k + (1 - lam) * q


def interpolate_negatives(queue: Tensor, mu: float, perm: Tensor) -> Tensor:
    """``mu Q + (1 - mu) Q[pi]``: every negative is a point on the segment between a queue row
    and another one (negative interpolation)."""
    return mu * queue + (1 - mu) * queue[perm.to(queue.device)]


def moco_loss(q: Tensor, k: Tensor, queue: Tensor, logit_scale: Tensor | float) -> Tensor:
    """MoCo's InfoNCE: mean over the rows of ``CE(logit_scale * [q_i . k_i, q_i . Q^T], 0)``."""
    positive = (q * k).sum(dim=1, keepdim=True)
    logits = logit_scale * torch.cat([positive, q @ queue.T], dim=1)
    target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, target)


def feature_transformation_loss(
    q: Tensor,
    k: Tensor,
    queue: Tensor,
    logit_scale: Tensor | float,
    draw: Transformation,
) -> Tensor:
    """MoCo's loss on the transformed features: ``q^``, ``k^`` extrapolated with ``draw.lam``
    and the queue interpolated with ``draw.mu`` and ``draw.perm`` (``lam = mu = 1``: plain
    MoCo). ``k`` and ``queue`` carry no gradient."""
    k, queue = k.detach(), queue.detach()
    if draw.lam != 1.0:
        q, k = extrapolate_positives(q, k, draw.lam)
    if draw.mu != 1.0:
        queue = interpolate_negatives(queue, draw.mu, draw.perm)
    return moco_loss(q, k, queue, logit_scale)
