"""InfoNCE without the R×C logits matrix: a tiled log-sum-exp with recomputation.

One direction of the CLIP loss with id-defined, label-smoothed targets (the same objective as
``soft_target_cross_entropy(scale * rows @ cols.T, multi_positive_targets(...))`` in
contrastive.py) is

    L = (1/R) sum_i [ w_i lse_i - sum_j q_ij s_ij ],   s_ij = scale <rows_i, cols_j>,
    q_ij = (1 - eps) m_ij / n_i + eps / C,   w_i = sum_j q_ij,   lse_i = log sum_j exp s_ij,

with m_ij = [row_ids_i == col_ids_j] and n_i = max(1, sum_j m_ij). Only ``lse`` needs every
logit: :class:`_TiledLogSumExp` visits tiles of at most ``block_elements`` logits, combines the
tiles' log-sum-exps in the forward pass and recomputes each tile's softmax in the backward pass,
so peak memory is O(block_elements) beyond the inputs whatever the batch size. The target term
is linear in the logits, so it has a closed form, ``sum_j q_ij s_ij = scale <rows_i, t_i>``
with ``t_i = (1 - eps)/n_i * (sum of the columns sharing row i's id) + eps/C * sum_j cols_j``,
computed in O((R + C) D) with ordinary autograd. Under DDP the caller passes this rank's rows
and columns with their ids; the columns are gathered here (``gather_with_grad``, ids with
``gather_no_grad``), exactly as the plain loss does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from modules.distributed import gather_no_grad, gather_with_grad


def _tiles(rows: int, cols: int, block_elements: int) -> Iterator[tuple[slice, slice]]:
    """Row and column slices of tiles with at most ``block_elements`` entries, as square as
    the shape allows (a wide tile keeps the matmul efficient)."""
    block_rows = max(1, min(rows, math.isqrt(block_elements)))
    block_cols = max(1, min(cols, block_elements // block_rows))
    for r0 in range(0, rows, block_rows):
        for c0 in range(0, cols, block_cols):
            yield slice(r0, min(r0 + block_rows, rows)), slice(c0, min(c0 + block_cols, cols))


class _TiledLogSumExp(torch.autograd.Function):
    """``lse_i = log sum_j exp(scale <rows_i, cols_j>)`` tile by tile.

    Backward, with g the incoming gradient and P the softmax of a tile's logits:
    dL/drows = scale diag(g) P cols, dL/dcols = scale P^T diag(g) rows and
    dL/dscale = sum_i g_i <rows_i, (P cols)_i>; scale and the subtraction of lse are fused
    into the tile's matmul (addmm), so a tile costs one matmul and one exp in place.
    """

    @staticmethod
    def forward(ctx, rows, cols, scale, block_elements):
        scaled = rows * scale
        lse = torch.full((rows.shape[0],), -math.inf, dtype=rows.dtype, device=rows.device)
        for r, c in _tiles(rows.shape[0], cols.shape[0], block_elements):
            lse[r] = torch.logaddexp(lse[r], torch.logsumexp(scaled[r] @ cols[c].T, dim=1))
        ctx.save_for_backward(rows, cols, scale, lse)
        ctx.block_elements = block_elements
        return lse

    @staticmethod
    def backward(ctx, grad_lse):
        rows, cols, scale, lse = ctx.saved_tensors
        grad_rows, grad_cols = torch.zeros_like(rows), torch.zeros_like(cols)
        weighted_rows = grad_lse[:, None] * rows
        grad_scale = torch.zeros_like(scale)
        alpha = float(scale)  # addmm takes a number
        for r, c in _tiles(rows.shape[0], cols.shape[0], ctx.block_elements):
            softmax = torch.addmm(-lse[r, None], rows[r], cols[c].T, alpha=alpha).exp_()
            pulled = softmax @ cols[c]
            grad_rows[r] += grad_lse[r, None] * pulled
            grad_scale += (weighted_rows[r] * pulled).sum()
            grad_cols[c] += softmax.T @ weighted_rows[r]
        return grad_rows * scale, grad_cols * scale, grad_scale, None


def _target_columns(cols: Tensor, row_ids: Tensor, col_ids: Tensor) -> tuple[Tensor, Tensor]:
    """(sum of the columns sharing each row's id [R, D], their count n_i [R]), by sorting the
    column ids rather than comparing R×C pairs."""
    unique, inverse, counts = torch.unique(col_ids, return_inverse=True, return_counts=True)
    sums = cols.new_zeros(len(unique), cols.shape[1]).index_add(0, inverse, cols)
    slot = torch.searchsorted(unique, row_ids).clamp_max(len(unique) - 1)
    found = unique[slot] == row_ids
    return sums[slot] * found[:, None].to(cols.dtype), counts[slot] * found


def chunked_soft_cross_entropy(
    rows: Tensor,
    cols: Tensor,
    scale: Tensor | float,
    row_ids: Tensor,
    col_ids: Tensor,
    label_smoothing: float = 0.0,
    block_elements: int = 4_000_000,
) -> Tensor:
    """Mean over rows of the label-smoothed multi-positive cross-entropy of the logits
    ``scale * rows @ cols.T`` (targets from equal ids), computed in tiles of at most
    ``block_elements`` logits; value and gradients equal the full-matrix loss.

    ``rows`` [R, D] / ``row_ids`` [R] and ``cols`` [C, D] / ``col_ids`` [C]: this rank's local
    rows and columns; the columns of every rank are gathered here.
    """
    if block_elements < 1:
        raise ValueError(f"block_elements must be positive, got {block_elements}")
    cols, col_ids = gather_with_grad(cols), gather_no_grad(col_ids)
    scale = torch.as_tensor(scale, dtype=rows.dtype, device=rows.device)
    eps = float(label_smoothing)
    lse = _TiledLogSumExp.apply(rows, cols, scale, int(block_elements))
    positives, counts = _target_columns(cols, row_ids, col_ids)
    has_positive = (counts > 0).to(rows.dtype)
    targets = (1.0 - eps) / counts.clamp_min(1).to(rows.dtype)[:, None] * positives
    targets = targets + (eps / cols.shape[0]) * cols.sum(dim=0)
    row_weight = (1.0 - eps) * has_positive + eps  # w_i = sum_j q_ij
    return (row_weight * lse - scale * (rows * targets).sum(dim=1)).mean()
