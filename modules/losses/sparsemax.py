"""Sparsemax (Martins & Astudillo, ICML 2016): the Euclidean projection of a score vector onto
the probability simplex, ``sparsemax(z) = argmin_{p in simplex} ||p - z||^2``.

Closed form (Prop. 1 of the paper): sort ``z`` descending as ``z_(1) >= ... >= z_(K)``; the
support size is ``k(z) = max{k : 1 + k z_(k) > sum_{j<=k} z_(j)}``; the threshold is
``tau(z) = (sum_{j<=k(z)} z_(j) - 1) / k(z)``; and ``sparsemax(z)_i = max(z_i - tau(z), 0)``.
Unlike softmax it gives exact zeros once the scores are far enough apart, which is what makes
FDT's token weights sparse.

The support is found without gradient; the output is then written as
``z_i - (sum_{j in S} z_j - 1) / |S|`` on the support ``S`` (0 elsewhere), so autograd yields
the sparsemax Jacobian ``diag(s) - s s^T / |S|`` (``s`` the support indicator; Prop. 2), i.e. the
backward ``g_i - mean_{j in S} g_j`` on ``S``, which is what FDT's ``Sparsemax.backward`` computes.
"""

from __future__ import annotations

import torch
from torch import Tensor


def sparsemax(scores: Tensor, dim: int = -1) -> Tensor:
    """Sparsemax of ``scores`` along ``dim``: non-negative, sums to 1, exactly sparse."""
    z = scores.movedim(dim, -1)
    # shift invariance: subtract the (detached) max so that the cumulative sums stay small
    z = z - z.detach().amax(dim=-1, keepdim=True)
    with torch.no_grad():
        ordered = z.sort(dim=-1, descending=True).values
        ranks = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
        cumulative = ordered.cumsum(dim=-1)
        size = (1 + ranks * ordered > cumulative).sum(dim=-1, keepdim=True)  # k(z) >= 1
        threshold = (cumulative.gather(-1, size - 1) - 1) / size
        support = z > threshold
    count = support.sum(dim=-1, keepdim=True).to(z.dtype)
    tau = (torch.where(support, z, 0.0).sum(dim=-1, keepdim=True) - 1) / count
    out = torch.where(support, z - tau, torch.zeros_like(z))
    return out.movedim(-1, dim)
