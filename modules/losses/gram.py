"""GRAM: Gramian volume alignment of n modalities (Cicchetti et al., ICLR 2025), as the
official ispamm/GRAM code: ``volume_computation`` in ``utils/volume.py`` (the general k form of
``volume_computation3/4/5``) and the volume contrastive loss of ``GRAM.forward_ret`` in
``model/gram.py`` (same as the README's "InfoNCE loss with Volume").

Anchor ``a_i`` (text) and the tuple ``(m^1_j, ..., m^{k-1}_j)`` of sample j (embeddings
L2-normalised by the caller); ``G_ij`` is the k x k Gram matrix of ``[a_i, m^1_j, ...]`` and

    V_ij = sqrt(|det G_ij|)   (the volume of the parallelotope the k vectors span)
    L = 1/2 [CE(-V / tau, diag; label smoothing 0.1) + CE(-V' / tau, diag; ls 0.1)],

``V'_ij = V(a_j, tuple_i)`` (tuple-to-anchor direction), tau the learnable ``contra_temp``
(init 0.07) used directly as a divisor: not exponentiated, not clamped.

How the ⚠ / code details of methods/part1.md Sec. 24 were resolved (official code read):
- epsilon: the official volume has none, ``torch.sqrt(torch.abs(torch.det(G.float())))``
  (the "+1e-8 inside the root" of the spec is not in ispamm/GRAM). ``eps`` defaults to 0 here
  (exactly official) and can be set (e.g. 1e-8) to keep the gradient finite at V = 0, where
  ``d sqrt`` is infinite (a degenerate tuple, e.g. collapsed towers).
- abs and sqrt: both, as official (``det G >= 0`` in exact arithmetic; ``abs`` absorbs
  round-off). The Gram matrix is built from dot products, so it does not assume unit norms.
- precision: the official code takes the determinant in float32 (``G.float()``) even under
  fp16; here half / bfloat16 are raised to float32, float32 / float64 are kept.
- DDP: official ``forward_ret`` scores local anchors against ``concat_all_gather`` (no
  gradient) tuples and local tuples against gathered anchors, targets ``rank * b + arange(b)``.
  Here the gathers are :func:`~modules.distributed.gather_with_grad`, the project's DDP
  convention: the same value, and the gradient of the one-process loss on the whole batch
  (the official gradient misses the columns' share under DDP; one process is identical).
- ``ids``: optional multi-positive targets (uniform over equal ids, then smoothing), as
  :func:`~modules.losses.contrastive.clip_loss`; ``None`` is the official diagonal.
Not included: DAM, the data-anchor matching head with negatives sampled ~ softmax(-V) (a
model component, not a loss on embeddings).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.distributed import gather_with_grad
from modules.losses.contrastive import (
    multi_positive_targets,
    row_and_column_ids,
    soft_target_cross_entropy,
)


def gram_volume(anchor: Tensor, others: Sequence[Tensor], eps: float = 0.0) -> Tensor:
    """Volumes [n_a, n] of the parallelotopes spanned by ``anchor_i`` [n_a, D] and the j-th rows
    of the k - 1 tensors ``others`` ([n, D] each): ``sqrt(|det G_ij| + eps)``, G the k x k
    Gram matrix (official ``volume_computation``). k = 2 gives ``|sin|`` of unit vectors."""
    if not others:
        raise ValueError("gram_volume needs at least one tensor besides the anchor")
    tuples = torch.stack(list(others), dim=1)  # [n, k-1, D]
    n_a, n = anchor.shape[0], tuples.shape[0]
    anchor_norm = (anchor * anchor).sum(dim=1)[:, None, None].expand(n_a, n, 1)  # <a_i, a_i>
    cross = torch.einsum("id,jmd->ijm", anchor, tuples)  # <a_i, m^m_j>: [n_a, n, k-1]
    within = (tuples @ tuples.transpose(1, 2))[None].expand(n_a, -1, -1, -1)  # [n_a, n, k-1, k-1]
    gram = torch.cat(
        [
            torch.cat([anchor_norm, cross], dim=2)[:, :, None, :],
            torch.cat([cross[..., None], within], dim=3),
        ],
        dim=2,
    )  # [n_a, n, k, k]
    if gram.dtype in (torch.float16, torch.bfloat16):
        gram = gram.float()
    return torch.sqrt(torch.linalg.det(gram).abs() + eps)


def pairwise_volume_scores(
    anchor: Tensor, others: Sequence[Tensor], block_rows: int = 256, eps: float = 0.0
) -> Tensor:
    """Retrieval scores ``-V`` [n_a, n] (higher = better match), anchors in blocks of
    ``block_rows`` rows so that the [rows, n, k, k] Gram matrices stay small."""
    return -torch.cat(
        [gram_volume(block, others, eps) for block in anchor.split(block_rows)], dim=0
    )


def gram_loss(
    anchor: Tensor,
    others: Sequence[Tensor],
    temperature: Tensor | float,
    label_smoothing: float = 0.1,
    ids: Tensor | None = None,
    eps: float = 0.0,
) -> Tensor:
    """GRAM's volume contrastive loss on this rank's rows: ``anchor`` [b, D] and ``others``
    (k - 1 tensors [b, D], the same samples' other modalities); ``temperature``: tau, divides
    the volumes as is. Each direction: local rows against the gathered columns."""
    batch = anchor.shape[0]
    if any(o.shape != anchor.shape for o in others):
        raise ValueError(f"others must match the anchor's shape {tuple(anchor.shape)}")
    anchor_to_tuple = gram_volume(anchor, [gather_with_grad(o) for o in others], eps)
    tuple_to_anchor = gram_volume(gather_with_grad(anchor), others, eps).T
    logits = [-anchor_to_tuple / temperature, -tuple_to_anchor / temperature]
    rows, cols = row_and_column_ids(ids, batch, anchor.device)
    if ids is None:
        return 0.5 * sum(F.cross_entropy(x, rows, label_smoothing=label_smoothing) for x in logits)
    targets = multi_positive_targets(rows, cols, label_smoothing, dtype=logits[0].dtype)
    return 0.5 * sum(soft_target_cross_entropy(x, targets) for x in logits)
