"""SwAV swapped prediction (Caron et al., NeurIPS 2020, Eq. 2-3), as ``train`` in the official
facebookresearch/swav ``main_swav.py``.

Views ``z_v`` [b, D] (this rank's rows of each crop, L2-normalised by the caller), prototypes
``C`` [K, D] (L2-normalised by the caller before each step, as the official loop does under
``no_grad``), scores ``z_v C^T``. For each code view ``s`` (the two large crops,
``crops_for_assign``), codes ``q_s = SinkhornKnopp(exp(z_s C^T / epsilon))`` without gradient,
equipartitioned over the global batch (``distributed_sinkhorn``: epsilon 0.05, 3 iterations),
and

    L = 1/|S| sum_{s in S} 1/(V - 1) sum_{v != s} CE_soft(z_v C^T / tau, q_s),   tau = 0.1,

each CE a mean over this rank's rows (the official ``torch.mean`` over the local batch).

methods/part1.md Sec. 30 marks nothing ⚠; every item was still checked in the official code:
the codes come from the same scores as the predictions, under ``torch.no_grad``; the Sinkhorn
all-reduces its sums, so a rank's codes depend on the whole batch but no gradient crosses
ranks; the loss is a per-rank mean and DDP's gradient average makes the step the one-process
step (CONTRACT.md's convention, no gather needed). ``p = softmax(x / tau)`` then ``log p`` in the
official code is ``log_softmax`` here (same value, stabler). Not included: the optional queue
(``queue_length``, from ``epoch_queue_starts``) and freezing the prototypes for the first
``freeze_prototypes_niters`` iterations (a training-loop concern: drop their gradient).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from modules.losses.contrastive import soft_target_cross_entropy
from modules.losses.sinkhorn import sinkhorn_knopp


def swav_loss(
    views: Sequence[Tensor],
    prototypes: Tensor,
    code_views: Sequence[int] = (0, 1),
    temperature: float = 0.1,
    epsilon: float = 0.05,
    iterations: int = 3,
) -> Tensor:
    """SwAV loss (Eq. 3) of ``views`` (V tensors [b, D], this rank's rows) against
    ``prototypes`` [K, D]; ``code_views``: indices of the views that get codes (the two
    large crops). Needs at least two views."""
    if len(views) < 2:
        raise ValueError(f"SwAV needs at least two views, got {len(views)}")
    if not code_views or any(not 0 <= s < len(views) for s in code_views):
        raise ValueError(f"code_views {tuple(code_views)} must index the {len(views)} views")
    scores = [z @ prototypes.T for z in views]
    loss = 0.0
    for s in code_views:
        codes = sinkhorn_knopp(scores[s].detach(), epsilon, iterations, distributed=True)
        swapped = sum(
            soft_target_cross_entropy(scores[v] / temperature, codes)
            for v in range(len(views))
            if v != s
        )
        loss = loss + swapped / (len(views) - 1)
    return loss / len(code_views)
