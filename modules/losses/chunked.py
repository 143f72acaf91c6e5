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
computed in O((R + C) D) with ordinary autograd.

The symmetric loss on one process (:func:`chunked_symmetric_cross_entropy`) needs the row and
the column log-sum-exps of one matrix: :class:`_TiledTwoWayLogSumExp` gets both from one product
per tile, forward and backward (4 products in all against open_clip's 6), and its tiles stay in
cache where the full matrix's softmax passes go to memory. Under DDP the caller passes this
rank's rows and columns with their ids; the columns are gathered here (``gather_with_grad``,
ids with ``gather_no_grad``), exactly as the plain loss does, one pass per direction.
:func:`choose_block_elements` is the rule that picks the full matrix or tiles, and their size.
fp16/bf16 inputs are computed in float32 with autocast off, so the forward tiles and their
recomputation in the backward pass are the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from modules.distributed import gather_no_grad, gather_with_grad, world_size

# The rule of choose_block_elements, measured with benchmarks/chunked_infonce.py on 2 CPU cores,
# D = 512, float32 (README, "Scale out"). One process: the fused tiles (4 products) beat the
# full matrix (3 products, but softmax passes over memory) from B ~ 2048 on; tiles of 1M-8M
# logits are within noise of each other. Under DDP a rank's two directions are separate
# blocks (two tile passes, 8 products, against the full matrices' 6), so tiles pay only once
# the matrices outgrow memory bandwidth, about 16k x 16k logits per matrix (1 GiB in float32).
PLAIN_MAX_LOGITS = 2048 * 2048
PLAIN_MAX_LOGITS_PER_DIRECTION = 16384 * 16384
DEFAULT_BLOCK_ELEMENTS = 2_000_000


def choose_block_elements(rows: int, cols: int, processes: int = 1) -> int:
    """The automatic choice for this rank's [rows, cols] logits: 0 (the full matrix) up to
    :data:`PLAIN_MAX_LOGITS` entries on one process (:data:`PLAIN_MAX_LOGITS_PER_DIRECTION`
    under DDP), else tiles of :data:`DEFAULT_BLOCK_ELEMENTS`."""
    limit = PLAIN_MAX_LOGITS if processes == 1 else PLAIN_MAX_LOGITS_PER_DIRECTION
    return 0 if rows * cols <= limit else DEFAULT_BLOCK_ELEMENTS


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
        alpha = float(scale)  # one host sync per call; addmm takes a number
        lse = torch.full((rows.shape[0],), -math.inf, dtype=rows.dtype, device=rows.device)
        for r, c in _tiles(rows.shape[0], cols.shape[0], block_elements):
            logits = _scaled_product(rows[r], cols[c], alpha)
            lse[r] = torch.logaddexp(lse[r], torch.logsumexp(logits, dim=1))
        ctx.save_for_backward(rows, cols, lse)
        ctx.block_elements, ctx.alpha, ctx.scale_shape = block_elements, alpha, scale.shape
        return lse

    @staticmethod
    def backward(ctx, grad_lse):
        rows, cols, lse = ctx.saved_tensors
        pulled = torch.zeros_like(rows)  # P cols, weighted by g
        grad_cols = torch.zeros_like(cols)
        weighted_rows = grad_lse[:, None] * rows
        for r, c in _tiles(rows.shape[0], cols.shape[0], ctx.block_elements):
            softmax = _scaled_product(rows[r], cols[c], ctx.alpha).sub_(lse[r, None]).exp_()
            pulled[r].addmm_(softmax, cols[c])
            grad_cols[c].addmm_(softmax.T, weighted_rows[r])
        pulled.mul_(grad_lse[:, None])
        grad_scale = _sum_of_products(rows, pulled).reshape(ctx.scale_shape)
        return pulled.mul_(ctx.alpha), grad_cols.mul_(ctx.alpha), grad_scale, None


class _TiledTwoWayLogSumExp(torch.autograd.Function):
    """Both directions' log-sum-exps of ``S = scale * a @ b.T`` from one product per tile:
    ``lse_a_i = log sum_j exp S_ij`` (a's rows against b) and ``lse_b_j = log sum_i exp S_ij``
    (b's rows against a).

    Forward: one matmul per tile feeds the row and the column log-sum-exp. Backward: the tile
    is recomputed once and both directions' gradients come from it,
    G = diag(g_a) softmax_rows(S) + softmax_cols(S) diag(g_b), dL/da = scale G b,
    dL/db = scale G^T a, dL/dscale = sum_i <a_i, (G b)_i>: 1 + 1 + 2 products in all, against
    2 + 4 for two separate directions (each with its own logits matrix, as open_clip's
    ClipLoss) and 2 + 2 + 4 for two passes of :class:`_TiledLogSumExp`.
    """

    @staticmethod
    def forward(ctx, a, b, scale, block_elements):
        alpha = float(scale)  # one host sync per call; addmm takes a number
        lse_a = torch.full((a.shape[0],), -math.inf, dtype=a.dtype, device=a.device)
        lse_b = torch.full((b.shape[0],), -math.inf, dtype=a.dtype, device=a.device)
        for r, c in _tiles(a.shape[0], b.shape[0], block_elements):
            logits = _scaled_product(a[r], b[c], alpha)
            lse_a[r] = torch.logaddexp(lse_a[r], torch.logsumexp(logits, dim=1))
            lse_b[c] = torch.logaddexp(lse_b[c], torch.logsumexp(logits, dim=0))
        ctx.save_for_backward(a, b, lse_a, lse_b)
        ctx.block_elements, ctx.alpha, ctx.scale_shape = block_elements, alpha, scale.shape
        return lse_a, lse_b

    @staticmethod
    def backward(ctx, grad_a_lse, grad_b_lse):
        a, b, lse_a, lse_b = ctx.saved_tensors
        pulled_a, pulled_b = torch.zeros_like(a), torch.zeros_like(b)  # G b and G^T a
        for r, c in _tiles(a.shape[0], b.shape[0], ctx.block_elements):
            logits = _scaled_product(a[r], b[c], ctx.alpha)
            grad = torch.sub(logits, lse_a[r, None]).exp_().mul_(grad_a_lse[r, None])
            column_softmax = logits.sub_(lse_b[None, c]).exp_()
            grad.addcmul_(column_softmax, grad_b_lse[None, c])
            pulled_a[r].addmm_(grad, b[c])
            pulled_b[c].addmm_(grad.T, a[r])
        grad_scale = _sum_of_products(a, pulled_a).reshape(ctx.scale_shape)
        return pulled_a.mul_(ctx.alpha), pulled_b.mul_(ctx.alpha), grad_scale, None


def _scaled_product(rows: Tensor, cols: Tensor, alpha: float) -> Tensor:
    """``alpha * rows @ cols.T`` in one matmul, without a scaled copy of the rows."""
    return torch.addmm(rows.new_zeros(()), rows, cols.T, beta=0, alpha=alpha)


def _row_dots(x: Tensor, y: Tensor) -> Tensor:
    """``<x_i, y_i>`` per row [R] as a batched matmul: no [R, D] product, no copy of a
    strided view (e.g. one caption of each item, ``text[:, k]``)."""
    return torch.einsum("rd,rd->r", x, y)


def _sum_of_products(x: Tensor, y: Tensor) -> Tensor:
    """``sum_i <x_i, y_i>`` as row dots summed, not one dot of B*D terms (which loses
    precision in float32 at large B)."""
    return _row_dots(x, y).sum()


def _target_columns(cols: Tensor, row_ids: Tensor, col_ids: Tensor) -> tuple[Tensor, Tensor]:
    """(sum of the columns sharing each row's id [R, D], their count n_i [R]), by sorting the
    column ids rather than comparing R×C pairs."""
    unique, inverse, counts = torch.unique(col_ids, return_inverse=True, return_counts=True)
    sums = cols.new_zeros(len(unique), cols.shape[1]).index_add(0, inverse, cols)
    slot = torch.searchsorted(unique, row_ids).clamp_max(len(unique) - 1)
    found = unique[slot] == row_ids
    return sums[slot] * found[:, None].to(cols.dtype), counts[slot] * found


def _one_positive_each(row_ids: Tensor, col_ids: Tensor) -> bool:
    """Row i's only positive is column i (distinct ids, the same on both sides)."""
    return (
        row_ids.shape == col_ids.shape
        and torch.equal(row_ids, col_ids)
        and len(torch.unique(col_ids)) == len(col_ids)
    )


def _soft_cross_entropy_from_lse(
    lse: Tensor,
    rows: Tensor,
    cols: Tensor,
    scale: Tensor,
    row_ids: Tensor,
    col_ids: Tensor,
    label_smoothing: float,
    diagonal: bool,
) -> Tensor:
    """``(1/R) sum_i [w_i lse_i - scale <rows_i, t_i>]``: the loss of the module docstring
    given the rows' log-sum-exps; the target term in closed form. Each row's loss is formed
    before the mean, so large log-sum-exps do not cancel across rows. ``diagonal``: row i's
    only positive is column i (:func:`_one_positive_each`), so ``w_i = 1`` and the target is
    ``(1 - eps) <rows_i, cols_i> + eps/C <rows_i, sum_j cols_j>``, with no [R, D]
    temporaries to hold for the backward pass."""
    eps = float(label_smoothing)
    targets = (eps / cols.shape[0]) * (rows @ cols.sum(dim=0))
    if diagonal:
        row_loss = lse - scale * ((1.0 - eps) * _row_dots(rows, cols) + targets)
        return row_loss.mean()
    positives, counts = _target_columns(cols, row_ids, col_ids)
    coefficient = (1.0 - eps) / counts.clamp_min(1).to(rows.dtype)
    targets = targets + coefficient * _row_dots(positives, rows)
    row_weight = (1.0 - eps) * (counts > 0).to(rows.dtype) + eps  # w_i = sum_j q_ij
    return (row_weight * lse - scale * targets).mean()


def _computed_in(x: Tensor) -> torch.dtype:
    """The loss's dtype for inputs of dtype ``x.dtype``: float32 for half precision (a
    log-sum-exp over thousands of fp16/bf16 logits is neither finite nor exact), else theirs."""
    return torch.promote_types(x.dtype, torch.float32)


def _as_scale(scale: Tensor | float, like: Tensor) -> Tensor:
    """The temperature as a 0-d tensor of ``like``'s dtype (a [1] parameter too), so the loss
    is a scalar."""
    return torch.as_tensor(scale, device=like.device).to(like.dtype).reshape(())


def _check_block(block_elements: int) -> None:
    if block_elements < 1:
        raise ValueError(f"block_elements must be positive, got {block_elements}")


def chunked_soft_cross_entropy(
    rows: Tensor,
    cols: Tensor,
    scale: Tensor | float,
    row_ids: Tensor,
    col_ids: Tensor,
    label_smoothing: float = 0.0,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> Tensor:
    """Mean over rows of the label-smoothed multi-positive cross-entropy of the logits
    ``scale * rows @ cols.T`` (targets from equal ids), computed in tiles of at most
    ``block_elements`` logits; value and gradients equal the full-matrix loss.

    ``rows`` [R, D] / ``row_ids`` [R] and ``cols`` [C, D] / ``col_ids`` [C]: this rank's local
    rows and columns; the columns of every rank are gathered here.
    """
    _check_block(block_elements)
    cols, col_ids = gather_with_grad(cols), gather_no_grad(col_ids)
    diagonal = _one_positive_each(row_ids, col_ids)
    with torch.autocast(rows.device.type, enabled=False):
        dtype = _computed_in(rows)
        rows, cols = rows.to(dtype), cols.to(dtype)
        scale = _as_scale(scale, rows)
        lse = _TiledLogSumExp.apply(rows, cols, scale, int(block_elements))
        return _soft_cross_entropy_from_lse(
            lse, rows, cols, scale, row_ids, col_ids, label_smoothing, diagonal
        )


def chunked_symmetric_cross_entropy(
    a: Tensor,
    b: Tensor,
    scale: Tensor | float,
    ids: Tensor,
    label_smoothing: float = 0.0,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> Tensor:
    """``1/2 [CE(a -> b) + CE(b -> a)]`` of :func:`chunked_soft_cross_entropy`, both directions
    from one tile pass (:class:`_TiledTwoWayLogSumExp`). Under DDP a rank's two directions are
    different blocks of the global matrix (its rows of ``a`` against all of ``b``, its rows of
    ``b`` against all of ``a``), so each direction makes its own pass there, exactly as before.
    ``ids`` [B]: this rank's sample ids.
    """
    _check_block(block_elements)
    if world_size() > 1:
        return 0.5 * sum(
            chunked_soft_cross_entropy(x, y, scale, ids, ids, label_smoothing, block_elements)
            for x, y in ((a, b), (b, a))
        )
    diagonal = _one_positive_each(ids, ids)
    with torch.autocast(a.device.type, enabled=False):
        dtype = _computed_in(a)
        a, b = a.to(dtype), b.to(dtype)
        scale = _as_scale(scale, a)
        lse_a, lse_b = _TiledTwoWayLogSumExp.apply(a, b, scale, int(block_elements))
        return 0.5 * (
            _soft_cross_entropy_from_lse(lse_a, a, b, scale, ids, ids, label_smoothing, diagonal)
            + _soft_cross_entropy_from_lse(lse_b, b, a, scale, ids, ids, label_smoothing, diagonal)
        )
