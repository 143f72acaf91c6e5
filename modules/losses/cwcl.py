"""Continuously weighted contrastive loss (CWCL; Srinivasa et al., NeurIPS 2023).

Notation of methods/part1.md Sec. 26: ``p_i`` the trainable tower's L2-normalised embedding,
``q_i`` the frozen (reference) tower's. The weights come from the reference tower's own
geometry, ``w_ij = 1/2 <q_i, q_j> + 1/2`` in [0, 1] (``w_ii = 1``), and each row is normalised
into a soft target, ``t_ij = w_ij / sum_k w_ik``:

    L_{U->V} = (1/B) sum_i CE_soft(scale * <p_i, q_:>, t_i:)
    L_{V->U} = (1/B) sum_i CE_soft(scale * <q_i, p_:>, t_i:)
    L = 1/2 (L_{U->V} + L_{V->U})

Either direction may use one-hot (id) targets instead (``"one_hot"``): CellCLIP (Lu et al.
2025, suinleelab/CellCLIP, ``src/clip/methods.py::cwcl_loss``) weights only the rows of the
reference side and keeps plain InfoNCE for the other. With both directions one-hot this is
exactly :func:`~modules.losses.contrastive.clip_loss`.

Under DDP every rank scores its local rows against the gathered global columns (one
``gather_with_grad`` per side, as ``clip_loss``); the weights of local rows against global
columns come from ``gather_no_grad`` of the reference embeddings (they carry no gradient).
"""

from __future__ import annotations

import torch
from torch import Tensor

from modules.distributed import gather_no_grad, gather_with_grad
from modules.losses.contrastive import (
    multi_positive_targets,
    row_and_column_ids,
    soft_target_cross_entropy,
)

TARGETS = ("continuous", "one_hot")


@torch.no_grad()
def continuous_weights(rows: Tensor, columns: Tensor) -> Tensor:
    """``w_ij = 1/2 <q_i, q_j> + 1/2`` [R, C] of the reference embeddings, L2-normalised here
    (so rescaling ``q`` changes nothing) and without gradient."""
    rows, columns = (torch.nn.functional.normalize(x, dim=-1) for x in (rows, columns))
    return 0.5 * rows @ columns.T + 0.5


def row_normalised(weights: Tensor) -> Tensor:
    """Soft targets ``w_ij / sum_k w_ik``: each row sums to 1."""
    return weights / weights.sum(dim=1, keepdim=True)


def cwcl_loss(
    trained: Tensor,
    reference: Tensor,
    logit_scale: Tensor | float,
    ids: Tensor | None = None,
    weights: Tensor | None = None,
    trained_to_reference: str = "continuous",
    reference_to_trained: str = "continuous",
) -> Tensor:
    """``1/2 (L_{U->V} + L_{V->U})`` with logits ``scale * <., .>``.

    ``trained`` (p) and ``reference`` (q): local [B, D] features, L2-normalised by the caller;
    ``reference`` is detached here (the frozen tower gets no gradient). ``weights`` [B, world*B]:
    the unnormalised ``w`` of the local rows against the global columns; None computes
    :func:`continuous_weights` from ``reference``. ``ids`` [B]: the positives of a one-hot
    direction (None: the diagonal), as in ``clip_loss``. ``trained_to_reference`` targets the
    rows ``p_i`` (L_{U->V}), ``reference_to_trained`` the rows ``q_i`` (L_{V->U}); each is
    ``"continuous"`` or ``"one_hot"``.
    """
    for name, value in (
        ("trained_to_reference", trained_to_reference),
        ("reference_to_trained", reference_to_trained),
    ):
        if value not in TARGETS:
            raise ValueError(f"{name} must be one of {TARGETS}, got {value!r}")
    assert trained.shape == reference.shape, f"{tuple(trained.shape)} vs {tuple(reference.shape)}"
    reference = reference.detach()
    if weights is None:
        weights = continuous_weights(reference, gather_no_grad(reference))
    continuous = row_normalised(weights).to(trained.dtype)
    rows, cols = row_and_column_ids(ids, trained.shape[0], trained.device)
    one_hot = multi_positive_targets(rows, cols, dtype=trained.dtype)

    def direction(a: Tensor, b: Tensor, kind: str) -> Tensor:
        logits = logit_scale * a @ gather_with_grad(b).T
        return soft_target_cross_entropy(logits, continuous if kind == "continuous" else one_hot)

    return 0.5 * (
        direction(trained, reference, trained_to_reference)
        + direction(reference, trained, reference_to_trained)
    )
