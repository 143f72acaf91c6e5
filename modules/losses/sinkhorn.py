"""Sinkhorn-Knopp equipartition of samples over prototypes: the one copy in the project.

Used by SwALIP (modules/losses/clip_rocket.py; clip-rocket ``SwALIPLoss.sinkhorn_knopp``, on a
batch the caller has already gathered) and by SwAV (modules/losses/swav.py; Caron et al. 2020,
Sec. 3.1 and ``distributed_sinkhorn`` of facebookresearch/swav ``main_swav.py``, on local rows).

With ``distributed=True`` the sums that the official ``distributed_sinkhorn`` all-reduces are
all-reduced here too (the total mass and each prototype's mass), and the sample marginal is
``1 / (world * b)``: the equipartition is over the global batch, while every rank keeps only
its own rows. The per-sample (column) normalisation needs no communication. For one process
(or torch.distributed not initialised) both modes are the same computation.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from modules.distributed import world_size


def _all_reduce(x: Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> Tensor:
    """``x`` reduced over all ranks (a copy); ``x`` itself for one process."""
    if world_size() == 1:
        return x
    x = x.clone()
    dist.all_reduce(x, op=op)
    return x


@torch.no_grad()
def sinkhorn_knopp(
    scores: Tensor, epsilon: float = 0.05, iterations: int = 3, distributed: bool = False
) -> Tensor:
    """Soft assignments [b, K] of b samples to K prototypes from ``scores`` [b, K], no gradient.

    ``Q = exp(scores / epsilon)`` normalised to total mass 1, then ``iterations`` times every
    prototype's mass to 1/K and every sample's to 1/B; returned as ``B * Q`` so that each
    sample's row sums to 1 (SwAV's final ``Q / Q.sum(dim=0)`` is the same thing after at least
    one iteration, since the last step sets every sample's mass to exactly 1/B).
    ``distributed``: ``scores`` are this rank's rows of a batch split over ranks; the masses
    are summed over ranks and ``B = world * b`` (SwAV's ``distributed_sinkhorn``; equal local
    batches, i.e. ``drop_last``, as there). Otherwise
    ``scores`` are the whole batch, ``B = b`` (SwALIP). ``exp`` is shifted by the (global) max
    score, which cancels in the first normalisation and keeps large ``scores / epsilon``
    finite. Half / bfloat16 scores are raised to float32 (SwAV's codes are float32; in half
    precision ``exp(-2 / epsilon)`` would underflow).
    """
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()

    def reduce(x: Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> Tensor:
        return _all_reduce(x, op) if distributed else x

    top = reduce(scores.max(), dist.ReduceOp.MAX)
    q = torch.exp((scores - top) / epsilon).T  # [K, b]
    prototypes, local = q.shape
    samples = local * (world_size() if distributed else 1)
    q = q / reduce(q.sum())
    for _ in range(iterations):
        q = q / reduce(q.sum(dim=1, keepdim=True)) / prototypes
        q = q / q.sum(dim=0, keepdim=True) / samples
    return (q * samples).T
