"""SepCLR's objective (Louiset et al., "Separating common from salient patterns with contrastive
representation learning", ICLR 2024; the released ``losses.py`` and
``cifar_mnist/sep_clr_k-jem.py`` of neurospin-projects/2024_rlouiset_sep_clr, which this file
follows term by term; the paper's equation numbers were not available to check, so the terms
are named, not numbered).

With the Gaussian kernel ``k(x, y) = exp(-||x - y||^2 / (2 tau))`` (tau = 0.5):

    align(x, y) = mean_i ||x_i - y_i||^2 / (2 tau)
    unif(x)     = log mean_{i<j} k(x_i, x_j)                  (``torch.pdist``: pairs i < j)
    JEM(c, s)   = mean_i log mean_j k(c_i, c_j) k(s_i, s_j)   (j runs over every item, i too)

Two views give normalised common codes ``c1, c2`` and unnormalised salient codes ``s1, s2``;
``target`` marks the target items (the background set: healthy, plain; the target set carries
the salient pattern). ``s~`` is ``s`` with the background rows set to the null vector (the
"information-less" salient code of the background; those rows carry no gradient, as in the
code's in-place assignment). The terms:

    common     = align(c1, c2) + 2 * (unif(c1) + unif(c2)) / 2
    salient    = align(s1_T, s2_T) + 2 * (unif(s~1) + unif(s~2)) / 2   (T: the target rows)
    background = (align(0, s1_B) + align(0, s2_B)) / 2                   (B: the background rows)
    jem        = (JEM(c1, s~1) + JEM(c2, s~2)) / 2

and ``L = common + beta_s salient + beta_r background + lambda jem`` with the paper's
beta_s = beta_r = 1000, lambda = 10 (the module's ``method.loss_weights``).

Two departures from the code, both exact in value where the code is finite: log-means are
computed with ``logsumexp`` (the code's ``exp().mean().log()`` gives -inf once the unnormalised
salient codes spread beyond ~10 tau, and then NaN gradients), and a batch without target (or
without background) rows gives 0 for that set's alignment term (the code's mean over an empty
set is NaN).

DDP: the terms are statistics of the whole batch (a log-mean over all i < j pairs is not a mean
over rows), so each rank gathers every code (``gather_with_grad``) and evaluates the objective
on the global batch: every rank's loss is the one-process loss, and ``gather_with_grad``'s
summed backward gives each rank W times its rows' gradient, which DDP's mean over W ranks
brings back to the one-process gradient. The official code is single-GPU; gathering keeps the
paper's batch (512) the batch of the statistics whatever the number of processes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from modules.distributed import gather_no_grad, gather_with_grad

#: The paper's weights of the salient, background and JEM terms (beta_s, beta_r, lambda).
PAPER_WEIGHTS = {"common": 1.0, "salient": 1000.0, "background": 1000.0, "jem": 10.0}


def squared_distances(x: Tensor) -> Tensor:
    """``||x_i - x_j||^2`` [N, N] by differences (exactly 0 on the diagonal, no sqrt)."""
    return (x[:, None, :] - x[None, :, :]).pow(2).sum(dim=-1)


def align(x: Tensor, y: Tensor, tau: float = 0.5) -> Tensor:
    """``mean_i ||x_i - y_i||^2 / (2 tau)``; 0 for no rows."""
    if x.shape[0] == 0:
        return x.sum() * 0.0 + y.sum() * 0.0
    return (x - y).pow(2).sum(dim=-1).mean() / (2 * tau)


def unif(x: Tensor, tau: float = 0.5) -> Tensor:
    """``log mean_{i<j} exp(-||x_i - x_j||^2 / (2 tau))`` over the pairs i < j."""
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"unif needs at least 2 rows, got {n}")
    rows, cols = torch.triu_indices(n, n, offset=1, device=x.device)
    pairs = (x[rows] - x[cols]).pow(2).sum(dim=-1)
    return torch.logsumexp(-pairs / (2 * tau), dim=0) - math.log(pairs.numel())


def jem(c: Tensor, s: Tensor, tau: float = 0.5) -> Tensor:
    """``mean_i log mean_j k(c_i, c_j) k(s_i, s_j)`` (j over every row, i included)."""
    joint = (squared_distances(c) + squared_distances(s)) / (2 * tau)
    return (torch.logsumexp(-joint, dim=1) - math.log(c.shape[0])).mean()


def sepclr_terms(
    c1: Tensor, c2: Tensor, s1: Tensor, s2: Tensor, target: Tensor, tau: float = 0.5
) -> dict[str, Tensor]:
    """The four terms on this rank's rows (see the module docstring): ``c1, c2`` [b, Dc]
    normalised common codes of the two views, ``s1, s2`` [b, Ds] salient codes, ``target``
    [b] (bool or 0/1: whether the item is in the target set). Gathered over ranks inside."""
    c1, c2, s1, s2 = (gather_with_grad(x) for x in (c1, c2, s1, s2))
    is_target = gather_no_grad(target.bool()).to(s1.device)
    null1 = torch.where(is_target[:, None], s1, torch.zeros_like(s1))  # s~ of view 1
    null2 = torch.where(is_target[:, None], s2, torch.zeros_like(s2))
    zeros = torch.zeros_like(s1[~is_target])
    return {
        "common": align(c1, c2, tau) + unif(c1, tau) + unif(c2, tau),
        "salient": align(s1[is_target], s2[is_target], tau) + unif(null1, tau) + unif(null2, tau),
        "background": 0.5 * (align(zeros, s1[~is_target], tau) + align(zeros, s2[~is_target], tau)),
        "jem": 0.5 * (jem(c1, null1, tau) + jem(c2, null2, tau)),
    }


def sepclr_loss(
    c1: Tensor,
    c2: Tensor,
    s1: Tensor,
    s2: Tensor,
    target: Tensor,
    tau: float = 0.5,
    weights: dict[str, float] | None = None,
) -> Tensor:
    """``common + beta_s salient + beta_r background + lambda jem`` (``weights``: the paper's
    :data:`PAPER_WEIGHTS` by default)."""
    weights = PAPER_WEIGHTS if weights is None else weights
    terms = sepclr_terms(c1, c2, s1, s2, target, tau)
    return torch.stack([weights[name] * value for name, value in terms.items()]).sum()
