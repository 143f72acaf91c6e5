"""InfoNCE without the R×C logits matrix: forward and backward in tiles, with recomputation.

One direction of the CLIP loss with id-defined, label-smoothed targets (the same objective as
``soft_target_cross_entropy(scale * rows @ cols.T, multi_positive_targets(...))`` in
contrastive.py) is

    L = (1/R) sum_i [ w_i lse_i - sum_j q_ij s_ij ],   s_ij = scale <rows_i, cols_j>,
    q_ij = (1 - eps) m_ij / n_i + eps / C,   w_i = sum_j q_ij,   lse_i = log sum_j exp s_ij,

with m_ij = [row_ids_i == col_ids_j] and n_i = max(1, sum_j m_ij). The forward pass visits
tiles of at most ``block_elements`` logits and carries each row's log-sum-exp across column
tiles (running max and rescaled sum). The backward pass recomputes every tile and uses
dL/ds_ij = (w_i softmax_ij - q_ij) / R, so peak memory is O(block_elements) beyond the
inputs, whatever the batch size. Under DDP the caller passes local rows and gathered columns
(``gather_with_grad``), exactly as for the plain loss.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor


def _tiles(rows: int, cols: int, block_elements: int) -> Iterator[tuple[slice, slice]]:
    """Row and column slices of tiles with at most ``block_elements`` entries, as square as
    the shape allows (a wide tile keeps the matmul efficient)."""
    block_rows = max(1, min(rows, math.isqrt(block_elements)))
    block_cols = max(1, min(cols, block_elements // block_rows))
    for r0 in range(0, rows, block_rows):
        for c0 in range(0, cols, block_cols):
            yield slice(r0, min(r0 + block_rows, rows)), slice(c0, min(c0 + block_cols, cols))


def _positive_counts(row_ids: Tensor, col_ids: Tensor) -> Tensor:
    """n_i: how many columns share row i's id (by sorting, not by an R×C comparison)."""
    ordered = col_ids.sort().values
    right = torch.searchsorted(ordered, row_ids, right=True)
    return right - torch.searchsorted(ordered, row_ids)


class _ChunkedSoftCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows, cols, scale, row_ids, col_ids, smoothing, block_elements):
        num_rows, num_cols = rows.shape[0], cols.shape[0]
        counts = _positive_counts(row_ids, col_ids)
        positive_weight = (1.0 - smoothing) / counts.clamp_min(1).to(rows.dtype)
        row_weight = (1.0 - smoothing) * (counts > 0).to(rows.dtype) + smoothing
        running_max = torch.full((num_rows,), -math.inf, dtype=rows.dtype, device=rows.device)
        running_sum = torch.zeros(num_rows, dtype=rows.dtype, device=rows.device)
        positive_logits = torch.zeros(num_rows, dtype=rows.dtype, device=rows.device)
        for r, c in _tiles(num_rows, num_cols, block_elements):
            logits = scale * (rows[r] @ cols[c].T)
            new_max = torch.maximum(running_max[r], logits.max(dim=1).values)
            running_sum[r] = running_sum[r] * (running_max[r] - new_max).exp() + (
                logits - new_max[:, None]
            ).exp().sum(dim=1)
            running_max[r] = new_max
            mask = row_ids[r, None] == col_ids[None, c]
            positive_logits[r] += (logits * mask).sum(dim=1)
        lse = running_max + running_sum.log()
        # sum_j (eps / C) s_ij in closed form: scale <rows_i, sum_j cols_j> eps / C
        uniform = scale * (rows @ cols.sum(dim=0)) * (smoothing / num_cols)
        target_logits = positive_weight * positive_logits + uniform
        ctx.save_for_backward(rows, cols, scale, row_ids, col_ids, lse, positive_weight, row_weight)
        ctx.smoothing, ctx.block_elements = smoothing, block_elements
        return (row_weight * lse - target_logits).mean()

    @staticmethod
    def backward(ctx, grad_output):
        rows, cols, scale, row_ids, col_ids, lse, positive_weight, row_weight = ctx.saved_tensors
        num_rows, num_cols = rows.shape[0], cols.shape[0]
        grad_rows, grad_cols = torch.zeros_like(rows), torch.zeros_like(cols)
        grad_scale = torch.zeros_like(scale)
        factor = grad_output / num_rows
        for r, c in _tiles(num_rows, num_cols, ctx.block_elements):
            dots = rows[r] @ cols[c].T
            softmax = (scale * dots - lse[r, None]).exp()
            mask = (row_ids[r, None] == col_ids[None, c]).to(rows.dtype)
            targets = positive_weight[r, None] * mask + ctx.smoothing / num_cols
            grad_logits = (row_weight[r, None] * softmax - targets) * factor
            grad_rows[r] += scale * (grad_logits @ cols[c])
            grad_cols[c] += scale * (grad_logits.T @ rows[r])
            grad_scale += (grad_logits * dots).sum()
        return grad_rows, grad_cols, grad_scale, None, None, None, None


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
    ``block_elements`` logits; value and gradients equal the full-matrix loss."""
    if block_elements < 1:
        raise ValueError(f"block_elements must be positive, got {block_elements}")
    scale = torch.as_tensor(scale, dtype=rows.dtype, device=rows.device)
    return _ChunkedSoftCrossEntropy.apply(
        rows, cols, scale, row_ids, col_ids, float(label_smoothing), int(block_elements)
    )
