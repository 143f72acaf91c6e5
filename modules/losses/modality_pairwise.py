"""The modality-pairwise unsupervised contrastive loss (Franceschini et al., "Multimodal
Emotion Recognition with Modality-Pairwise Unsupervised Contrastive Loss", ICPR 2022;
methods/part1.md Sec. 9; official code ``ricfrr/mpuc-mer``: the unsupervised branch of
``train.py`` with ``utils/SupConSeparate.py``).

M modalities of the same samples (embeddings L2-normalised by the caller), every ordered pair
contrasted, positives the same sample (official ``train.py``: ``encoder_loss(feat, feat_inner)``
for every ordered pair, then divided by their number):

    L = 1 / (M (M - 1)) * sum_{m != m'} L_{m -> m'},
    L_{m -> m'} = -1/B sum_i log softmax_j(<z^m_i, z^{m'}_j> / tau)_i,

anchors from m, the contrast set from m'. ``L_{m -> m'} + L_{m' -> m}`` is twice the symmetric
CLIP loss of the pair, so ``L`` is the mean of :func:`~modules.losses.contrastive.clip_loss`
over the M (M - 1) / 2 unordered pairs: the platform's one InfoNCE, its multi-positive ``ids``
and its DDP convention (local rows, gathered columns) come with it.

The official code feeds two samplings of each utterance (two random 30-frame windows) through
SupCon with the ``I`` mask tiled 2 x 2 and the self index removed, so an anchor's only positive
is its other view in the other modality, its own (time-aligned) view there leaves the
denominator, and the mean over positives is divided by |P| + 1 = 2: half an InfoNCE over 2B - 1
candidates, which acts as a halved learning rate (the spec's "implementation quirks"). That
two-view form is not reproduced: one view per modality, the clean objective.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import torch
from torch import Tensor

from modules.losses.contrastive import clip_loss


def modality_pairwise_loss(
    features: Sequence[Tensor],
    logit_scale: Tensor | float,
    ids: Tensor | None = None,
    anchor: int | None = None,
) -> Tensor:
    """Mean InfoNCE over the ordered pairs of ``features`` (M >= 2 tensors [B, D], local rows).

    ``anchor``: only the pairs that contain ``features[anchor]`` (both directions), the
    star topology of anchored pairwise baselines (ImageBind, LanguageBind, VAST); None: all
    pairs, the paper's objective."""
    if len(features) < 2:
        raise ValueError(f"need at least 2 modalities, got {len(features)}")
    pairs = [
        (a, b)
        for a, b in combinations(range(len(features)), 2)
        if anchor is None or anchor in (a, b)
    ]
    losses = [clip_loss(features[a], features[b], logit_scale, ids=ids) for a, b in pairs]
    return torch.stack(losses).mean()
