"""Core-tuning's hard-pair mining in feature space and its two losses (Zhang, Hooi, Hu,
Liang & Feng, "Unleashing the Power of Contrastive Self-Supervised Visual Models via
Contrast-Regularized Fine-Tuning", NeurIPS 2021: hard pair mining and decision-boundary
smoothing; the paper's equation numbers could not be checked offline, so the names below are
the official code's: ``Vanint/Core-tuning``
``Core-tuning.py``: ``feature_mixup``, ``focal_SupConLoss``, the soft-label cross-entropy of
``train``).

From the backbone features ``f`` [B, D] and one-hot labels ``y`` of a batch, two mixtures per
sample ``i`` (the gradient reaches the backbone through them):

- a hard negative, ``f'_i = (1 - l) f_i + l f_k`` with a random partner ``k`` of the batch and
  ``l ~ Beta(a, a)`` clamped to ``l >= 0.8`` (mostly the partner, a little of the anchor; the
  labels are mixed alike);
- a hard positive, ``f''_i = l f_p + (1 - l) f_n``, ``l ~ Beta(a, a)``, between the anchor's
  hardest positive ``p`` (the least similar sample of its class, cosine of the detached
  features) and its hardest negative ``n`` (the most similar sample of another class).

The rows ``[f; f'; f'']`` with soft labels ``[y; y'; y'']`` feed a soft-label cross-entropy
(the smooth decision boundary) and the focal SupCon of modules/losses/supcon.py on the
contrastor's output, where rows with identical soft labels are positives.

Choices (the code's quirks, decided here):

- the code picks the hardest positive as ``argmin`` of ``similarity * positive_mask``, where the
  non-positives are 0, so it returns a non-positive whenever every positive has cosine > 0,
  and maps index 0 to the anchor itself; here it is the least similar *same-class* sample, and
  the anchor itself only when it has no other sample of its class (the spec's "intended"
  reading). The hardest negative is likewise taken among other-class samples only (the anchor
  itself when there is none);
- the code's first ``B`` rows are ``features.clone().detach().requires_grad_(True)``, a new leaf,
  so the backbone is trained only through the mixtures; here the original features keep their
  gradient (a choice: the method trains on ``[f; f'; f'']`` in both losses, and the detach reads
  as a side effect of making a leaf copy);
- the partner ``k`` is drawn per sample (uniform over the other rows of the global batch)
  rather than as one permutation, so that every sample's draws depend only on its dataset
  index and the step, and 2 processes reproduce 1 (the code: one ``random.shuffle``, whose
  comment accepts the same thing: "even if a few pairs are not negative");
- soft labels are grouped into classes by their values rounded to 1e-6, i.e. identical
  mixtures are positives, the intended meaning. The code encodes a row as ``sum_c y_c 10^c`` in
  float32 and label-encodes the floats, which merges distinct mixtures whose codes round to the
  same float (e.g. ``0.2 e_0 + 0.8 e_9`` and ``0.2 e_1 + 0.8 e_9`` on CIFAR-10) and overflows for
  100 classes; that coarser grouping is not reproduced;
- the mining and the contrast see the whole (global) batch of ``data.batch_size`` samples; the
  official run accumulates 4 micro-batches of 64, so its pairs are mined within 64 samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

#: Core-tuning clamps the hard-negative mixing weight of the partner to at least this.
NEGATIVE_LAMBDA_MIN = 0.8


@dataclass(frozen=True)
class MixingDraws:
    """The random draws of one batch's mining, per local row: the partner of the hard
    negative (a position in the global batch) and the two mixing weights."""

    partner: Tensor  # [b] int64
    negative_lambda: Tensor  # [b], already clamped
    positive_lambda: Tensor  # [b]


def mixing_draws(
    index: Tensor, positions: Tensor, global_rows: int, step: int, alpha: float, salt: int
) -> MixingDraws:
    """Per-sample draws from generators seeded by (dataset ``index``, ``step``, ``salt``): the
    same sample draws the same numbers whatever the number of processes. ``positions``: the
    samples' rows in the global batch (the partner is any other row)."""
    if global_rows < 2:
        raise ValueError("hard-pair mining needs at least 2 samples in the (global) batch")
    partner, negative, positive = [], [], []
    for i, own in zip(index.tolist(), positions.tolist(), strict=True):
        rng = np.random.default_rng([int(i), int(step), int(salt)])
        other = int(rng.integers(global_rows - 1))
        partner.append(other + (other >= own))
        negative.append(max(rng.beta(alpha, alpha), NEGATIVE_LAMBDA_MIN))
        positive.append(rng.beta(alpha, alpha))
    return MixingDraws(
        torch.tensor(partner, dtype=torch.long),
        torch.tensor(negative, dtype=torch.float32),
        torch.tensor(positive, dtype=torch.float32),
    )


def hardest_pairs(features: Tensor, labels: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
    """(hardest positive, hardest negative) positions in the global batch for the local rows at
    ``positions``: the least similar row of the same class and the most similar row of another
    class (cosine of the detached ``features`` [N, D], ``labels`` [N] int); the row itself when
    it has no such row."""
    unit = F.normalize(features.detach(), dim=-1)
    sims = unit[positions] @ unit.T  # [b, N]
    same = labels[positions][:, None] == labels[None, :]
    own = torch.zeros_like(same)
    own[torch.arange(len(positions)), positions] = True
    positive = same & ~own
    least = sims.masked_fill(~positive, float("inf")).argmin(dim=1)
    most = sims.masked_fill(same, float("-inf")).argmax(dim=1)
    hard_positive = torch.where(positive.any(dim=1), least, positions)
    hard_negative = torch.where((~same).any(dim=1), most, positions)
    return hard_positive, hard_negative


def hard_pair_mixtures(
    features: Tensor,
    soft_labels: Tensor,
    labels: Tensor,
    positions: Tensor,
    draws: MixingDraws,
) -> tuple[Tensor, Tensor]:
    """The hard negatives and hard positives of the local rows at ``positions`` of the global
    batch (``features`` [N, D] with gradient, ``soft_labels`` [N, C] one-hot, ``labels`` [N]):
    ``([f'; f''] [2b, D], [y'; y''] [2b, C])``."""
    device = features.device
    partner = draws.partner.to(device)
    neg = draws.negative_lambda.to(device, features.dtype)[:, None]
    pos = draws.positive_lambda.to(device, features.dtype)[:, None]
    hard_positive, hard_negative = hardest_pairs(features, labels, positions)
    f, y = features[positions], soft_labels[positions]
    negatives_f = (1 - neg) * f + neg * features[partner]
    negatives_y = (1 - neg) * y + neg * soft_labels[partner]
    positives_f = pos * features[hard_positive] + (1 - pos) * features[hard_negative]
    positives_y = pos * soft_labels[hard_positive] + (1 - pos) * soft_labels[hard_negative]
    return torch.cat([negatives_f, positives_f]), torch.cat([negatives_y, positives_y])


def soft_label_ids(soft_labels: Tensor, decimals: int = 6) -> Tensor:
    """Class ids [N] of soft-label rows [N, C]: rows equal after rounding share an id."""
    return torch.unique(soft_labels.round(decimals=decimals), dim=0, return_inverse=True)[1]


def soft_cross_entropy(logits: Tensor, soft_labels: Tensor) -> Tensor:
    """``mean_i -sum_c y_ic log softmax(logits_i)_c`` (cross-entropy on mixed labels)."""
    return -(F.log_softmax(logits, dim=-1) * soft_labels).sum(dim=-1).mean()
