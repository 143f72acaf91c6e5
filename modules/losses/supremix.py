"""SupReMix: supervised contrastive regression with embedding-level mixtures as hard pairs
(Wu, Dong, Chen, Zhou and Zhou, "Mixup Your Own Pairs", arXiv 2309.16633; methods/part1.md
section 32). The paper's equations were not available; the loss follows the official
``SupConLoss_v2`` (``supremix_loss.py``) and ``mixing_func`` of yilei-wu/SupReMix's training
script (``train_supremix.py``) and ``calculate_alpha_vectorized`` of its ``utils.py``, as
stored in the public code index (the GitHub repository itself now holds only a README).

Rows a (anchors) and columns c (candidates) are the N = 2B embeddings of two views (stacked
``cat(view0, view1)``), ``f`` L2-normalised, ``y`` the targets, ``sg`` stop-gradient, tau the
temperature. Besides the real candidates (every c != a), each anchor gets two kinds of
**detached** mixtures of embeddings (``mixing_func``: built from the features and detached):

* hard negatives, anchor-inclusive: for every c with ``y_c != y_a``,
  ``m = alpha_ac sg(f_a) + (1 - alpha_ac) sg(f_c)`` with label ``alpha_ac y_a + (1 - alpha_ac) y_c``
  and ``alpha_ac ~ Beta(2, 8)`` (the anchor's weight, mean 0.2);
* hard positives, anchor-exclusive: for every pair (j, k) with
  ``y_j < y_a < y_k``, ``y_a - y_j < n`` and ``y_k - y_a < n`` (n = 5, strict as in the code),
  ``m = alpha sg(f_j) + (1 - alpha) sg(f_k)``, ``alpha = (y_k - y_a) / (y_k - y_j)`` so that the
  mixed label ``alpha y_j + (1 - alpha) y_k`` is exactly ``y_a`` (the label the code assigns).

With P(a) the real candidates of a's label (its other view, equal targets) plus its hard
positives, D(a) every real candidate, hard negative and hard positive of a, ``l(a, x) =
<f_a, x> / tau`` and ``w(a, x) = 1 + |y_a - y_x|`` (the code's "distance magnifying" weight
``L1_inv``; 1 for every positive since its label is y_a):

    L_a = -1/|P(a)| sum_{p in P(a)} [ l(a, p) - log sum_{x in D(a)} w(a, x) exp(l(a, x)) ]
    L   = mean_a L_a

Mixtures are not re-normalised (the code mixes the model's output features and takes plain
dot products), so ``l(a, m)`` is the same mixture of ``<f_a, sg f_j> / tau`` and
``<f_a, sg f_k> / tau``: computed from the [n, N] similarity matrix, no [n, N, N, D] tensor
of mixtures (the reference of tests/test_losses_supremix.py builds the mixtures explicitly).
Gradients reach a mixture's logit through the anchor only.

How the ⚠ items of the spec were resolved (all from the official code above):

- Beta parameters of the negative mixtures: ``--beta`` default 0, and ``b == 0`` draws
  ``Beta(2, 8)`` in ``mixing_func`` (the argparse help string says "0: beta(5, 5)", but the code
  that runs, and the README's commands, use b = 0 -> Beta(2, 8)); followed: Beta(2, 8) for the
  anchor's weight. The draws are an input here (``anchor_weight``) so that every caller, the
  DDP ranks and the tests see the same numbers.
- the hard-positive alpha: ``calculate_alpha_vectorized`` computes ``(y_k - y_i) /
  clamp(y_k - y_j, 1e-9)`` clipped to [0, 1] and the mixture is ``alpha f_j + (1 - alpha) f_k``;
  followed (the clip never acts: ``y_j < y_i < y_k``).
- negative weighting: ``--use_weight`` (default True) with ``--distance L1_inv``: every term
  of the denominator is multiplied by ``1 + |y_a - y_x|``; followed (``distance_weight``).
- tau: the script's default 0.3, ``base_temperature = temperature`` (no rescaling); n = 5.
- One code quirk is not reproduced: the code subtracts the row maximum of the real logits
  (which includes the masked self-similarity) and, separately, the row maximum of the mixture
  logits before concatenating them, which scales every mixture term by ``exp(max_real -
  max_mix)`` relative to the real ones (a numerical-stability shift that changes the loss);
  here one log-sum-exp over all terms, the loss written above.
- Rows without positives cannot occur with two views (the other view is a positive); such a
  row would contribute 0 (the code divides 0 by 0).

DDP: this rank's rows (anchors) against the gathered candidates (``gather_with_grad``), the
mixtures built from the gathered embeddings (detached), targets by ``gather_no_grad``; every
rank holds the same number of rows, so the mean of the ranks' means is the one-process mean
(the official training is single-process ``DataParallel``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.distributed import gather_no_grad, gather_with_grad
from modules.losses.contrastive import row_and_column_ids


def mix(first: Tensor, second: Tensor, alpha: Tensor | float) -> Tensor:
    """The embedding-level mixture ``alpha first + (1 - alpha) second``."""
    return alpha * first + (1 - alpha) * second


def hard_positive_alpha(anchor: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """``alpha = (y_high - y_a) / (y_high - y_low)``: the weight of the lower sample in the
    anchor-exclusive mixture whose label ``alpha y_low + (1 - alpha) y_high`` is ``y_a``
    (``calculate_alpha_vectorized``; the denominator clamped to 1e-9 and alpha to [0, 1] as
    there, which never acts for a bracketing pair)."""
    return ((high - anchor) / (high - low).clamp_min(1e-9)).clamp(0.0, 1.0)


def hard_positive_pairs(rows: Tensor, columns: Tensor, window: float) -> tuple[Tensor, Tensor]:
    """For anchors of targets ``rows`` [n] and candidates of targets ``columns`` [N]: the mask
    [n, N, N] of pairs (j, k) with ``y_j < y_a < y_k`` within ``window`` on both sides (strict
    inequalities, as ``mixing_func``) and their alphas [n, N, N] (0 where the mask is False)."""
    y_a, y_j, y_k = rows[:, None, None], columns[None, :, None], columns[None, None, :]
    mask = (y_j < y_a) & (y_a < y_k) & (y_a - y_j < window) & (y_k - y_a < window)
    alpha = torch.where(mask, hard_positive_alpha(y_a, y_j, y_k), torch.zeros_like(y_a))
    return mask, alpha


def supremix_loss(
    features: Tensor,
    targets: Tensor,
    anchor_weight: Tensor,
    temperature: float = 0.3,
    window: float = 5.0,
    distance_weight: bool = True,
    mix_negatives: bool = True,
    mix_positives: bool = True,
) -> Tensor:
    """SupReMix on this rank's rows.

    ``features`` [n, D] (normalised here; both views' rows, e.g. ``cat(view0, view1)``),
    ``targets`` [n]; ``anchor_weight`` [n, N] (N = the gathered number of rows): the anchor's
    weight in its anchor-inclusive mixture with candidate c (Beta(2, 8) draws; entries where
    ``y_c == y_a`` are unused). ``window``: n of the hard positives. ``distance_weight``: the
    ``1 + |dy|`` weights of the denominator. ``mix_negatives`` / ``mix_positives`` off give the
    code's ``mix_pos`` / ``mix_neg`` / ``supcon`` (both off) ablations.
    """
    n = features.shape[0]
    y = targets.reshape(n).to(features.dtype)
    f = F.normalize(features, dim=1)
    candidates = gather_with_grad(f)  # [N, D]
    y_all = gather_no_grad(y)
    rows, cols = row_and_column_ids(None, n, features.device)
    is_self = rows[:, None] == cols[None, :]
    logits = f @ candidates.T / temperature  # real candidates, gradient on both sides
    frozen = f @ candidates.detach().T / temperature  # <f_a, sg f_c>: mixtures' sides detached
    gap = (y[:, None] - y_all[None, :]).abs()  # |y_a - y_c| [n, N]

    def log_weight(distance: Tensor) -> Tensor:
        return torch.log1p(distance) if distance_weight else torch.zeros_like(distance)

    # real candidates: positives of equal target, every other candidate in the denominator
    real_pos = (gap == 0) & ~is_self
    parts = [torch.where(is_self, -math.inf, logits + log_weight(gap))]
    pos_sum = torch.where(real_pos, logits, 0.0).sum(dim=1)
    pos_count = real_pos.sum(dim=1)

    if mix_negatives:  # anchor-inclusive: alpha sg(f_a) + (1 - alpha) sg(f_c), y_c != y_a
        alpha = anchor_weight.to(f.dtype)
        own = (f * f.detach()).sum(dim=1, keepdim=True) / temperature  # <f_a, sg f_a> / tau
        neg_logits = mix(own, frozen, alpha)
        neg_gap = (1 - alpha) * gap  # |y_a - (alpha y_a + (1 - alpha) y_c)|
        parts.append(torch.where(gap > 0, neg_logits + log_weight(neg_gap), -math.inf))

    if mix_positives:  # anchor-exclusive: alpha sg(f_j) + (1 - alpha) sg(f_k), label y_a
        mask, alpha = hard_positive_pairs(y, y_all, window)
        pos_logits = mix(frozen[:, :, None], frozen[:, None, :], alpha.to(f.dtype))
        parts.append(torch.where(mask, pos_logits, -math.inf).flatten(1))  # weight 1
        pos_sum = pos_sum + torch.where(mask, pos_logits, 0.0).flatten(1).sum(dim=1)
        pos_count = pos_count + mask.flatten(1).sum(dim=1)

    log_denominator = torch.cat(parts, dim=1).logsumexp(dim=1)
    per_row = log_denominator - pos_sum / pos_count.clamp_min(1)
    return torch.where(pos_count > 0, per_row, 0.0).mean()
