"""SimLAP's label-pair-gated contrastive loss (Wu, Atito, Feng, Mo, Kittler & Awais, "Rethinking
positive pairs in contrastive learning", arXiv 2410.18200, first titled "Hydra"; methods/part1.md
section 22). The paper's text was not available; the loss follows the official supervised
training script (``erow/vitookit``, ``vitookit/evaluation/simlap.py``: ``disparate_loss``,
``Filter`` / ``apply_gate``, ``multipos_ce_loss``).

An anchor ``a`` with label ``y1(a)`` is paired with a class ``y2(a)``; the gate
``g_a in (0, 1)^D`` of that class pair (computed by the caller: modules/simlap.py) selects the
subspace in which the two classes should look alike, and is applied to the anchor *and to every
candidate*:

    u_a = normalize(z_a * g_a),    u_ab = normalize(z_b * g_a),    l_ab = <u_a, u_ab> / tau,
    P_a = {b : y(b) = y2(a)},      N_a = {b : y(b) not in {y1(a), y2(a)}},
    L = 1 / sum_a |P_a|  sum_a sum_{p in P_a} [ log(e^{l_ap} + sum_{n in N_a} e^{l_an}) - l_ap ].

Each positive has its own denominator (itself and the negatives, no other positive), the sum is
over every (anchor, positive) pair and divided by their total number, not averaged per anchor
(``multipos_ce_loss``: ``sum(pos_mask * ...) / pos_mask.sum()``). Samples of class ``y1(a)``
that are not positives are neither positives nor negatives. The anchor itself is a candidate
(the script contrasts ``z`` with ``z``), so when ``y2(a) = y1(a)`` it is one of its own
positives (the spec's ⚠: followed as in the code). The script's ``logits - logits.mean(1)`` is a
per-row shift that cancels in every term and is left out.

Several labelings: a candidate may carry one label per labeling (``candidate_labels`` [n, T]),
all in one label space whose classes are disjoint across labelings (the caller offsets them);
``y(b) = c`` then reads "``c`` is one of ``b``'s labels". With T = 1 this is the paper's loss.

The gated cosine is computed without the [b, n, D] tensor of gated candidates:
``<z_a g_a, z_b g_a> = (z_a g_a^2) . z_b`` and ``|z_b g_a|^2 = g_a^2 . z_b^2``.

DDP (the convention of :func:`~modules.losses.contrastive.clip_loss`): local anchors against the
candidates of every rank (``gather_with_grad``; their labels ``gather_no_grad``); each rank
divides its sum by the global number of (anchor, positive) pairs over the world size, so the
mean of the ranks' losses is the one-process loss (as :func:`~modules.losses.supcon.supcon_loss`
does with its anchors; that loss itself does not fit: its denominator holds every other positive
and it averages per anchor).
"""

from __future__ import annotations

import torch
from torch import Tensor

from modules.distributed import gather_no_grad, gather_with_grad, world_size

#: Norms below this are clamped (as ``F.normalize``'s eps).
EPS = 1e-12


def gated_cosine(anchors: Tensor, candidates: Tensor, gates: Tensor) -> Tensor:
    """``cos(z_a * g_a, z_b * g_a)`` [b, n] for anchors [b, D], candidates [n, D], gates [b, D]."""
    squared = gates * gates
    dots = (anchors * squared) @ candidates.T
    anchor_norms = (anchors * gates).norm(dim=-1).clamp_min(EPS)
    candidate_norms = (squared @ (candidates * candidates).T).clamp_min(EPS * EPS).sqrt()
    return dots / (anchor_norms[:, None] * candidate_norms)


def simlap_loss(
    anchors: Tensor,
    candidates: Tensor,
    gates: Tensor,
    y1: Tensor,
    y2: Tensor,
    candidate_labels: Tensor,
    logit_scale: Tensor | float = 10.0,
) -> Tensor:
    """The gated loss of this rank's ``anchors`` [b, D] (labels ``y1`` [b], pair classes ``y2``
    [b], gates [b, D] in (0, 1)) against the ``candidates`` [c, D] of every rank (this rank's
    rows; gathered here) with their labels ``candidate_labels`` [c] or [c, T] (one column per
    labeling, classes disjoint across columns); ``logit_scale`` = 1/tau (paper: 10). Features
    are used unnormalised (the gated cosine normalises). No positive anywhere: 0 (with a
    gradient)."""
    labels = candidate_labels if candidate_labels.ndim == 2 else candidate_labels[:, None]
    columns = gather_with_grad(candidates)
    column_labels = gather_no_grad(labels)
    logits = logit_scale * gated_cosine(anchors, columns, gates)
    positive = (column_labels[None] == y2[:, None, None]).any(dim=-1)  # [b, n]
    of_y1 = (column_labels[None] == y1[:, None, None]).any(dim=-1)
    negative = ~(positive | of_y1)
    negatives = logits.masked_fill(~negative, float("-inf")).logsumexp(dim=1, keepdim=True)
    terms = torch.logaddexp(logits, negatives) - logits
    total = gather_no_grad(positive.sum()[None]).sum()
    if total == 0:
        return logits.sum() * 0.0
    return torch.where(positive, terms, torch.zeros_like(terms)).sum() * world_size() / total
