"""Multi-view contrastive losses (Koromilas et al., "Principled Multi-View Contrastive
Learning", arXiv 2025; methods/part1.md Sec. 33): one term per data point over all of its K
views, instead of an average of two-view losses.

With K L2-normalised views ``z_i^v`` of B items, ``s = logit_scale * <., .>`` (= 1/tau):

- MV-InfoNCE (Eq. for L_MV-InfoNCE)::

      L = -1/B sum_i log [ 2 sum_{v<w} exp(s(z_i^v, z_i^w))
                           / sum_v sum_{(u,j) != (v,i)} exp(s(z_i^v, z_j^u)) ]

  all view pairs of the item in the numerator, every other embedding of every view in the
  denominator (the denominator of item i sums the K softmax rows of its K embeddings). With
  K = 2 and equal row sums of the two views it is SimCLR's NT-Xent.
- MV-DHEL (Eq. for L_MV-DHEL)::

      L = -1/B sum_i log [ sum_{v<w} exp(s(z_i^v, z_i^w))
                           / prod_v sum_{j != i} exp(s(z_i^v, z_j^v)) ]

  uniformity within each view only (alignment and uniformity decoupled). With K = 2 it is
  DHEL, ``-log e^{s_12} / (D_1 D_2)`` (the official ``NTXentHPS``).
- The baselines the paper compares with: the two-view loss averaged over the K(K-1)/2 view
  pairs, NT-Xent (modules/losses/simclr.py; the official ``NTXent(pwe=True)``) or DHEL (the
  official ``MVDHEL(pwe=True)``).

Checked against the official code (``pakoromilas/Multi-View-CL``, ``models/losses.py``,
``MVINFONCE`` and ``MVDHEL``): the factor 2 of the MV-InfoNCE numerator, the self-pair left
out of both denominators, the per-view product of MV-DHEL's denominators, the mean over items.
The official code forms the ratios of exponentials directly; here every sum of exponentials is
a ``logsumexp`` (same value, no overflow at small tau).

DDP (docs/new_method.md, "The loss"): each rank scores its local rows of every view against the
gathered columns of every view (``gather_with_grad``) and averages over its local items; the
mean over ranks is the mean over the global batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import combinations

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.distributed import gather_with_grad, rank
from modules.losses.simclr import nt_xent_loss


def _check(views: Sequence[Tensor]) -> None:
    assert len(views) >= 2, f"a multi-view loss needs at least 2 views, got {len(views)}"
    shapes = {tuple(v.shape) for v in views}
    assert len(shapes) == 1, f"view shapes differ: {sorted(shapes)}"


def _positive_logsumexp(views: Sequence[Tensor], logit_scale: Tensor | float) -> Tensor:
    """``log sum_{v<w} exp(s(z_i^v, z_i^w))`` per local item: [b]."""
    pairs = [(a * b).sum(dim=-1) for a, b in combinations(views, 2)]
    return torch.logsumexp(logit_scale * torch.stack(pairs), dim=0)


def _without_self(logits: Tensor, offset: int) -> Tensor:
    """``logits`` [b, N'] with each local row's own column ``offset + row`` set to -inf."""
    local = logits.shape[0]
    own = offset + rank() * local + torch.arange(local, device=logits.device)
    return logits.masked_fill(F.one_hot(own, logits.shape[1]).bool(), float("-inf"))


def mv_infonce_loss(views: Sequence[Tensor], logit_scale: Tensor | float) -> Tensor:
    """MV-InfoNCE of K >= 2 views [b, D] (this rank's rows, row i of every view the same item,
    L2-normalised); ``logit_scale`` = 1/tau."""
    _check(views)
    columns = torch.cat([gather_with_grad(v) for v in views])  # [K N, D]: view 0, view 1, ...
    n = columns.shape[0] // len(views)
    rows = [_without_self(logit_scale * v @ columns.T, k * n) for k, v in enumerate(views)]
    denominator = torch.logsumexp(torch.cat(rows, dim=1), dim=1)  # [b]: all K rows of item i
    numerator = math.log(2.0) + _positive_logsumexp(views, logit_scale)
    return (denominator - numerator).mean()


def mv_dhel_loss(views: Sequence[Tensor], logit_scale: Tensor | float) -> Tensor:
    """MV-DHEL of K >= 2 views [b, D] (as :func:`mv_infonce_loss`): each view's denominator
    over the other items of that view only, their product over the views."""
    _check(views)
    denominator = sum(
        torch.logsumexp(_without_self(logit_scale * v @ gather_with_grad(v).T, 0), dim=1)
        for v in views
    )
    return (denominator - _positive_logsumexp(views, logit_scale)).mean()


def pairwise_mean(
    loss: Callable[[Tensor, Tensor, Tensor | float], Tensor],
    views: Sequence[Tensor],
    logit_scale: Tensor | float,
) -> Tensor:
    """A two-view ``loss(a, b, logit_scale)`` averaged over the K(K-1)/2 view pairs: the
    paper's multi-view baseline (the official ``pwe=True`` of ``NTXent`` and ``MVDHEL``)."""
    _check(views)
    return torch.stack([loss(a, b, logit_scale) for a, b in combinations(views, 2)]).mean()


def pairwise_nt_xent_loss(views: Sequence[Tensor], logit_scale: Tensor | float) -> Tensor:
    """NT-Xent (modules/losses/simclr.py) averaged over the view pairs."""
    return pairwise_mean(nt_xent_loss, views, logit_scale)


def pairwise_dhel_loss(views: Sequence[Tensor], logit_scale: Tensor | float) -> Tensor:
    """DHEL (MV-DHEL of two views) averaged over the view pairs."""
    return pairwise_mean(lambda a, b, scale: mv_dhel_loss([a, b], scale), views, logit_scale)
