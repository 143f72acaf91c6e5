"""SimCLR's NT-Xent (Chen et al., ICML 2020, Eq. 1 and Algorithm 1).

The two views of N items form 2N embeddings ``z`` (L2-normalised by the caller); every one is
scored against the other 2N - 1 in one softmax, its positive being the other view of its item:

    l(i, j) = -log [ exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau) ],
    L = 1/(2N) sum_k [ l(2k-1, 2k) + l(2k, 2k-1) ].

Unlike CLIP's InfoNCE (modules/losses/contrastive.py), the other samples of the *same* view are
negatives too (2N - 2 negatives per row) and the sample itself is left out of the denominator,
so no existing function expresses it. As in the official TF code (``add_contrastive_loss``:
``logits_aa`` with the diagonal masked, ``logits_ab``, one softmax over their concatenation)
the masked entry is removed from the softmax; here with ``-inf`` rather than ``-1e9``. The TF
code returns ``loss_a + loss_b``, twice the paper's mean; this is the paper's mean (AdamW is
invariant to the loss's scale up to its epsilon).

DDP (docs/new_method.md, "The loss"): each rank scores its local rows of both views against the
gathered columns of both views (``gather_with_grad``) and averages over its 2b rows; the mean
over ranks is the 2N-row mean, as SimCLR's cross-replica negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.distributed import gather_with_grad, rank, world_size


def nt_xent_logits(a: Tensor, b: Tensor, logit_scale: Tensor | float) -> tuple[Tensor, Tensor]:
    """The softmax input of NT-Xent: logits [2b, 2N] of this rank's rows of both views (view
    ``a`` first) against the gathered columns of both views, the sample itself at ``-inf``, and
    each row's positive column [2b]. Every other finite entry of a row is a negative; a variant
    that drops negatives (modules/losses/hard_negative.py) masks more entries of the same
    logits."""
    assert a.shape == b.shape, f"view shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"
    local = a.shape[0]
    total = world_size() * local
    columns = torch.cat([gather_with_grad(a), gather_with_grad(b)])  # [2N, D]: view a, view b
    logits = logit_scale * torch.cat([a, b]) @ columns.T  # [2b, 2N]
    own = rank() * local + torch.arange(local, device=a.device)
    itself = torch.cat([own, own + total])
    positive = torch.cat([own + total, own])
    logits = logits.masked_fill(F.one_hot(itself, 2 * total).bool(), float("-inf"))
    return logits, positive


def nt_xent_loss(a: Tensor, b: Tensor, logit_scale: Tensor | float) -> Tensor:
    """NT-Xent of two views ``a``, ``b`` [b, D] (this rank's rows, row i of both the same item,
    L2-normalised), logits ``logit_scale * <z_i, z_k>`` (``logit_scale`` = 1/tau)."""
    return F.cross_entropy(*nt_xent_logits(a, b, logit_scale))
