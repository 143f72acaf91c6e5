"""Supervised contrastive loss (Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020,
Eq. 2, ``L^sup_out``), the form CoMix uses for both of its contrastive terms (Sahoo et al.,
NeurIPS 2021, Eq. 3 and 5; official ``CVIR/CoMix`` ``core/losses.py``, the SupCon authors'
``SupConLoss`` with ``contrast_mode="all"``).

V views of b samples give N = V b anchors ``z_a`` (the views stacked). With ``P(a)`` the anchors
other than ``a`` whose sample has ``a``'s id and ``A(a)`` every anchor other than ``a``:

    L = (tau / tau_base) * 1/N sum_a  -1/|P(a)| sum_{p in P(a)} log
            exp(<z_a, z_p> / tau) / sum_{k in A(a)} exp(<z_a, z_k> / tau).

Features are used as given (the caller normalises them or not: CoMix feeds softmax
probabilities, unnormalised). ``tau_base`` is the SupCon code's ``base_temperature``
(default 0.07 there, and CoMix keeps it: its loss is ``0.5 / 0.07`` times the plain mean).

``keep`` [b] (bool) leaves samples out entirely (neither anchor nor candidate), CoMix's
confident-pseudo-label selection, without changing the batch shape. Under DDP: local anchors
against the gathered candidates of every rank (the convention of
:func:`~modules.losses.contrastive.clip_loss`), and each rank divides its anchors' sum by the
global number of kept anchors over the world size, so the mean of the ranks' losses is the
one-process loss whatever the number of kept samples per rank. No kept anchor: 0.

Core-tuning's focal form (Zhang et al., NeurIPS 2021; official ``Vanint/Core-tuning``
``focal_SupConLoss``): ``focal=True`` weights each positive's ``log p_ap`` by ``(1 - p_ap)``,
where ``p_ap`` is the softmax probability above (not detached, as in the code), so pairs the
model already matches contribute nothing; ``average="columns"`` divides an anchor's sum by
the number of columns of the similarity matrix (every candidate, itself included: the code's
``.mean(1)``) instead of by ``|P(a)|`` (``"positives"``, the paper's form and SupCon's).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from modules.distributed import gather_no_grad, gather_with_grad, rank, world_size


def supcon_loss(
    views: Sequence[Tensor],
    ids: Tensor,
    temperature: float,
    base_temperature: float | None = None,
    keep: Tensor | None = None,
    focal: bool = False,
    average: str = "positives",
) -> Tensor:
    """SupCon over ``views`` (V tensors [b, D], local rows, same samples in the same order);
    ``ids`` [b]: equal ids are positives (comparable across ranks: class ids, or global sample
    ids); ``base_temperature`` None: ``temperature`` (no rescaling); ``keep`` [b] bool;
    ``focal``, ``average``: Core-tuning's focal weight and per-anchor average (module
    docstring)."""
    if len(views) < 1:
        raise ValueError("supcon_loss needs at least one view")
    if average not in ("positives", "columns"):
        raise ValueError(f"average must be 'positives' or 'columns', got {average!r}")
    b = views[0].shape[0]
    keep = torch.ones(b, dtype=torch.bool, device=ids.device) if keep is None else keep.bool()
    anchors = torch.cat(list(views))  # [V b, D], view-major
    candidates = torch.cat([gather_with_grad(v) for v in views])  # [V W b, D]
    all_ids, all_keep = gather_no_grad(ids), gather_no_grad(keep)
    n_views, world = len(views), world_size()
    row_ids, row_keep = ids.repeat(n_views), keep.repeat(n_views)
    col_ids, col_keep = all_ids.repeat(n_views), all_keep.repeat(n_views)
    # anchor (v, i) is candidate v * W b + rank * b + i
    own = torch.arange(n_views, device=ids.device)[:, None] * world * b + rank() * b
    own = (own + torch.arange(b, device=ids.device)).reshape(-1)
    is_self = torch.zeros(
        anchors.shape[0], candidates.shape[0], dtype=torch.bool, device=ids.device
    )
    is_self[torch.arange(anchors.shape[0], device=ids.device), own] = True
    allowed = col_keep[None, :] & ~is_self
    logits = (anchors @ candidates.T / temperature).masked_fill(~allowed, float("-inf"))
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
    positive = (row_ids[:, None] == col_ids[None, :]) & allowed
    count = positive.sum(dim=1)
    log_prob = torch.where(positive, log_prob, torch.zeros_like(log_prob))  # 0 off positives
    summed = ((1 - log_prob.exp()) * log_prob if focal else log_prob).sum(1)
    mean_pos = summed / (count.clamp_min(1) if average == "positives" else candidates.shape[0])
    used = row_keep & (count > 0)
    total = gather_no_grad(used.sum()[None]).sum()
    if total == 0:
        return anchors.sum() * 0.0
    scale = temperature / (base_temperature or temperature)
    return -scale * (mean_pos * used).sum() * world / total
