"""The regularisers of "It's Not a Modality Gap: Characterizing and Addressing the Contrastive
Gap" (Fahim, Murphy & Fyshe, 2024), on L2-normalised embeddings, as in the official code
(abrar-fahim/contrastive-gap, clips/hf_clip.py):

- in-modal uniformity ``L_unif = 1/2 log mean_{i<j} exp(-2 |x_i - x_j|^2)
  + 1/2 log mean_{i<j} exp(-2 |y_i - y_j|^2)`` (Wang & Isola 2020, t = 2);
- cross-modal uniformity ``L_xunif = log mean_{i != j} exp(-2 |x_i - y_j|^2)`` over the
  off-diagonal image-text pairs only;
- alignment ``L_align = mean_i |x_i - y_i|^2`` (alpha = 2).

The loss terms take this rank's local rows. The two uniformities compare every pair of the
global batch, so they gather both modalities inside (``gather_with_grad``): every rank holds the
same value and the gather's summed backward, averaged by DDP, gives the single-process gradient.
Alignment is a mean over pairs, so the per-rank mean of the local pairs is already exact.
:func:`uniformity` itself gathers nothing: the evaluation metrics call it on whole (already
gathered) embedding sets.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from modules.distributed import gather_with_grad


def _log_mean_exp(values: Tensor) -> Tensor:
    return torch.logsumexp(values, dim=0) - math.log(values.numel())


def _squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """``|a_i - b_j|^2`` [A, B] from inner products: unlike ``cdist``/``pdist`` (a square root)
    its gradient stays finite when two embeddings coincide."""
    squared = a.pow(2).sum(dim=1)[:, None] + b.pow(2).sum(dim=1)[None, :] - 2.0 * a @ b.T
    return squared.clamp_min(0.0)


def uniformity(x: Tensor, t: float = 2.0) -> Tensor:
    """``log mean_{i<j} exp(-t |x_i - x_j|^2)`` over the rows of ``x`` as given (no gather;
    needs at least two rows)."""
    rows, cols = torch.triu_indices(len(x), len(x), offset=1, device=x.device)
    return _log_mean_exp(_squared_distances(x, x)[rows, cols].mul(-t))


def in_modal_uniformity(x: Tensor, y: Tensor, t: float = 2.0) -> Tensor:
    """``L_unif``: the mean of each modality's uniformity over the global batch (local rows in,
    gathered here)."""
    return 0.5 * (uniformity(gather_with_grad(x), t) + uniformity(gather_with_grad(y), t))


def cross_modal_uniformity(x: Tensor, y: Tensor, t: float = 2.0) -> Tensor:
    """``L_xunif``: uniformity between ``x_i`` and ``y_j`` for ``i != j`` (pairs excluded) over
    the global batch (local rows in, gathered here)."""
    x, y = gather_with_grad(x), gather_with_grad(y)
    off_diagonal = ~torch.eye(len(x), dtype=torch.bool, device=x.device)
    return _log_mean_exp(_squared_distances(x, y)[off_diagonal].mul(-t))


def alignment(x: Tensor, y: Tensor) -> Tensor:
    """``L_align``: mean squared distance between paired embeddings (local pairs; no gather)."""
    return (x - y).pow(2).sum(dim=1).mean()
