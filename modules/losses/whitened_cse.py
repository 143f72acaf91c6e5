"""WhitenedCSE's shuffled group whitening and multi-positive InfoNCE (Zhuo et al., "WhitenedCSE:
Whitening-based Contrastive Learning of Sentence Embeddings", ACL 2023, Sec. 3; methods/part1.md
Sec. 11; official code ``SupstarZh/WhitenedCSE``, ``whitenedcse/shuffled_group_whitening.py`` and
``cl_forward`` in ``whitenedcse/models.py``).

**Shuffled group whitening (SGW).** For one view's batch ``X`` [N, D]: permute the channels with
``pi``; cut them into groups of ``group_size`` consecutive (permuted) channels; in each group
centre over the batch, ``Sigma_g = X_g^T X_g / N`` and whiten with ZCA,
``X_g <- X_g U (Lambda + eps)^(-1/2) U^T`` (``Sigma_g = U Lambda U^T``); undo the permutation.
Each view gets its own ``pi``, so the K views of one sentence are whitened with different group
divisions: extra positive diversity (the paper's "better alignment").

As in the official code:

- the covariance is the biased one (``/ N``) and the whitening matrix gets no gradient (the
  official ``transformation`` rebuilds the covariance with ``torch.tensor(covs)``, cutting it
  from the graph); the centring does get one;
- whitening is ZCA through an eigendecomposition (``torch.linalg.eigh``, the official
  ``symeig`` engine).

Departures: ``eps`` (added to the eigenvalues; the official code has none) keeps a collapsed
group of a from-scratch tower finite; under DDP the statistics are those of the *global* batch
(local rows in, rows gathered with gradient, whitened together, local rows out, like
modules/simclr.py ``GlobalBatchNorm1d``), so that two processes take the one-process step; the
official code whitens each GPU's batch on its own.

**Multi-positive contrast.** With K views ``z^(1..K)`` (L2-normalised, after the head), the
loss is the official ``loss1 + loss2`` generalised to K views:
``L = sum_{k=2..K} InfoNCE_{z^(1) -> z^(k)}``, each a cross-entropy over the in-batch columns of
view ``k`` (one direction: the anchor rows of view 1), each term SimCSE's unsupervised loss
(modules/losses/simcse.py), so with K = 2 and no whitening this is SimCSE. DDP: local rows of
view 1 against the gathered columns of each view, each term averaged over the local rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from modules.distributed import gather_with_grad, rank
from modules.losses.simcse import simcse_loss


def group_whiten(x: Tensor, group_size: int, eps: float = 0.0) -> Tensor:
    """ZCA whitening of each group of ``group_size`` consecutive channels of ``x`` [N, D] over
    the batch (biased covariance, the whitening matrix without gradient); same shape."""
    n, d = x.shape
    if d % group_size:
        raise ValueError(f"group_size {group_size} must divide the feature width {d}")
    groups = (x - x.mean(dim=0, keepdim=True)).reshape(n, d // group_size, group_size)
    groups = groups.transpose(0, 1)  # [G, N, g]
    with torch.no_grad():
        covariance = groups.transpose(1, 2) @ groups / n  # [G, g, g]
        values, vectors = torch.linalg.eigh(covariance)
        whitening = vectors @ torch.diag_embed((values + eps).rsqrt()) @ vectors.transpose(1, 2)
    return (groups @ whitening).transpose(0, 1).reshape(n, d)


def shuffled_group_whitening(
    x: Tensor, permutation: Tensor, group_size: int, eps: float = 0.0
) -> Tensor:
    """SGW of this rank's rows ``x`` [b, D]: channels permuted by ``permutation`` [D], grouped,
    whitened with the statistics of the global batch (rows of every rank), permuted back;
    returns this rank's rows."""
    local = x.shape[0]
    rows = gather_with_grad(x)[:, permutation]
    white = group_whiten(rows, group_size, eps)[:, torch.argsort(permutation)]
    return white[rank() * local : (rank() + 1) * local]


def multi_positive_info_nce(views: Sequence[Tensor], logit_scale: Tensor | float) -> Tensor:
    """``sum_{k >= 2} InfoNCE(views[0] -> views[k])`` of K >= 2 views [b, D] (this rank's rows,
    row i of every view the same sentence, L2-normalised): SimCSE's unsupervised loss (Eq. 4,
    modules/losses/simcse.py) of the first view against each other view."""
    if len(views) < 2:
        raise ValueError(f"need at least 2 views, got {len(views)}")
    return sum(simcse_loss(views[0], view, logit_scale) for view in views[1:])
