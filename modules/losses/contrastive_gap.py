"""The regularisers of "It's Not a Modality Gap: Characterizing and Addressing the Contrastive
Gap" (Fahim, Murphy & Fyshe, 2024), on L2-normalised embeddings, as in the official code
(abrar-fahim/contrastive-gap, clips/hf_clip.py):

- in-modal uniformity ``L_unif = 1/2 log mean_{i<j} exp(-2 |x_i - x_j|^2)
  + 1/2 log mean_{i<j} exp(-2 |y_i - y_j|^2)`` (Wang & Isola 2020, t = 2);
- cross-modal uniformity ``L_xunif = log mean_{i != j} exp(-2 |x_i - y_j|^2)`` over the
  off-diagonal image-text pairs only;
- alignment ``L_align = mean_i |x_i - y_i|^2`` (alpha = 2).

Each term is computed on the whole (global) batch: under DDP the caller gathers with
``gather_with_grad``; every rank then holds the same value, and DDP's averaging of the
gradients gives the single-process gradient.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _log_mean_exp(values: Tensor) -> Tensor:
    return torch.logsumexp(values, dim=0) - math.log(values.numel())


def _squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """``|a_i - b_j|^2`` [A, B] from inner products: unlike ``cdist``/``pdist`` (a square root)
    its gradient stays finite when two embeddings coincide."""
    squared = a.pow(2).sum(dim=1)[:, None] + b.pow(2).sum(dim=1)[None, :] - 2.0 * a @ b.T
    return squared.clamp_min(0.0)


def uniformity(x: Tensor, t: float = 2.0) -> Tensor:
    """``log mean_{i<j} exp(-t |x_i - x_j|^2)`` (needs at least two rows)."""
    rows, cols = torch.triu_indices(len(x), len(x), offset=1, device=x.device)
    return _log_mean_exp(_squared_distances(x, x)[rows, cols].mul(-t))


def in_modal_uniformity(x: Tensor, y: Tensor, t: float = 2.0) -> Tensor:
    """``L_unif``: the mean of each modality's uniformity."""
    return 0.5 * (uniformity(x, t) + uniformity(y, t))


def cross_modal_uniformity(x: Tensor, y: Tensor, t: float = 2.0) -> Tensor:
    """``L_xunif``: uniformity between ``x_i`` and ``y_j`` for ``i != j`` (pairs excluded)."""
    off_diagonal = ~torch.eye(len(x), dtype=torch.bool, device=x.device)
    return _log_mean_exp(_squared_distances(x, y)[off_diagonal].mul(-t))


def alignment(x: Tensor, y: Tensor) -> Tensor:
    """``L_align``: mean squared distance between paired embeddings."""
    return (x - y).pow(2).sum(dim=1).mean()
