"""SimCSE's contrastive objective (Gao, Yao & Chen, "SimCSE: Simple Contrastive Learning of
Sentence Embeddings", EMNLP 2021).

Unsupervised (Eq. 4): the positive of sentence ``i`` is its own second dropout pass,
``l_i = -log e^{sim(h_i, h_i^+)/tau} / sum_j e^{sim(h_i, h_j^+)/tau}``. Supervised (Eq. 5):
an NLI premise, its entailment as the positive and its contradiction as a hard negative, every
sentence's hard negative among the columns of every row:
``l_i = -log e^{sim(h_i, h_i^+)/tau} / sum_j (e^{sim(h_i, h_j^+)/tau} + e^{sim(h_i, h_j^-)/tau})``.
One direction, anchor -> positives, as the official code (``cl_forward``) computes it; its
``hard_negative_weight`` (default 0) is added to each row's logit of its own hard negative.

Under DDP every rank scores its local anchors against the gathered positives (and hard
negatives), the project's convention (modules/losses/contrastive.py): the mean of the ranks'
losses and the DDP-averaged gradient are the one-process ones. The official code's all-gather
of ``z1``/``z2``/``z3`` gives the same loss value, but its gradient is 1/W of that (each rank's
global loss reaches only its own rows, then DDP averages over W ranks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.distributed import gather_with_grad, rank


def simcse_loss(
    anchor: Tensor,
    positive: Tensor,
    logit_scale: Tensor | float,
    hard_negative: Tensor | None = None,
    hard_negative_weight: float = 0.0,
) -> Tensor:
    """Mean over local anchors of Eq. 4 (``hard_negative`` None) or Eq. 5. Inputs: local
    ``[B, D]`` L2-normalised embeddings; ``logit_scale`` = 1/tau."""
    if anchor.shape != positive.shape or (
        hard_negative is not None and hard_negative.shape != anchor.shape
    ):
        raise ValueError("anchor, positive and hard_negative must have the same shape [B, D]")
    batch = anchor.shape[0]
    logits = logit_scale * anchor @ gather_with_grad(positive).T
    target = rank() * batch + torch.arange(batch, device=anchor.device)
    if hard_negative is not None:
        negatives = logit_scale * anchor @ gather_with_grad(hard_negative).T
        if hard_negative_weight:
            own = F.one_hot(target, negatives.shape[1]).to(negatives.dtype)
            negatives = negatives + hard_negative_weight * own
        logits = torch.cat([logits, negatives], dim=1)
    return F.cross_entropy(logits, target)
