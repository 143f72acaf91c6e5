"""The tiled InfoNCE direction (chunked.py) against the label-smoothed multi-positive
cross-entropy written out scalar by scalar, for tiles smaller than a row, a few rows, and the
whole matrix."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.chunked import chunked_soft_cross_entropy
from tests.conformance.kit import F64, LossCase, randn

ROW_IDS = torch.tensor([0, 1, 9, 2, 4, 3])  # id 9 has no positive column
COL_IDS = torch.tensor([0, 1, 1, 2, 5, 2, 3, 6])  # id 2 on both ranks (columns 3 and 5)
DIM = 4


def slow_soft_cross_entropy(
    rows: Tensor, cols: Tensor, scale: Tensor, row_ids: Tensor, col_ids: Tensor, eps: float
) -> Tensor:
    """``(1/R) sum_i -sum_j q_ij log softmax_j(scale <rows_i, cols_j>)`` with
    ``q_ij = (1 - eps) [same id] / #positives + eps / C``, one scalar at a time."""
    r, c = rows.shape[0], cols.shape[0]
    total = 0.0
    for i in range(r):
        logits = [scale * sum(rows[i, k] * cols[j, k] for k in range(DIM)) for j in range(c)]
        log_z = torch.log(sum(torch.exp(v) for v in logits))
        positives = [j for j in range(c) if int(col_ids[j]) == int(row_ids[i])]
        for j in range(c):
            q = eps / c + ((1.0 - eps) / len(positives) if j in positives else 0.0)
            total = total - q * (logits[j] - log_z)
    return total / r


def rows_and_columns(generator: torch.Generator) -> dict[str, Tensor]:
    return {
        "rows": randn(generator, len(ROW_IDS), DIM),  # raw features: logits well beyond +-1
        "cols": randn(generator, len(COL_IDS), DIM),
        "scale": torch.tensor(1.3, dtype=F64),
        "row_ids": ROW_IDS.clone(),
        "col_ids": COL_IDS.clone(),
    }


def chunked_case(block: int, eps: float) -> LossCase:
    def loss(rows, cols, scale, row_ids, col_ids):
        return chunked_soft_cross_entropy(rows, cols, scale, row_ids, col_ids, eps, block)

    def reference(rows, cols, scale, row_ids, col_ids):
        return slow_soft_cross_entropy(rows, cols, scale, row_ids, col_ids, eps)

    return LossCase(
        name=f"chunked/block{block}_smoothing{eps}",
        inputs=rows_and_columns,
        per_sample=("rows", "cols", "row_ids", "col_ids"),
        loss=loss,
        reference=reference,
        differentiable=("rows", "cols", "scale"),
    )


# a rank holds 3 rows x 8 gathered columns: tiles of 1 logit, of 5 (partial rows), and one tile
CASES = [chunked_case(1, 0.1), chunked_case(5, 0.0), chunked_case(77, 0.1)]
