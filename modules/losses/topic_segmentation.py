"""Losses of TSSP + CSSL topic segmentation ("Improving Long Document Topic Segmentation
Models With Enhanced Coherence Modeling", EMNLP 2023; official code:
alibaba-damo-academy/SpokenNLP, ``emnlp2023-topic_segmentation``).

``L = lambda_TS L_TS + lambda_TSSP L_TSSP + lambda_CSSL L_CSSL``, L_TS also on the disarrayed
document (``do_da_ts``); read off the official code (``scripts/models/modules/
loss_calculator.py``, ``cssl.py``, ``src/models/modules/tssp.py``), equation numbers unchecked:

- :func:`segmentation_loss`: L_TS, cross-entropy of each sentence's boundary / no
  boundary logits. The official B-EOP and O weights are both 0.5 (``weight_label_zero``),
  which the weighted mean cancels: plain cross-entropy. The last sentence of a document is
  not scored (always a boundary; the official windows set its label to -100).
- :func:`tssp_loss`: L_TSSP, 3-way cross-entropy of each sentence of the disarrayed
  document given its predecessor (classes in datamodules/segmented_documents.py).
- :func:`cssl_indices` + :func:`cssl_loss`: L_CSSL with the official
  ``cl_anchor_level: eop_list`` selection (``scripts/models/modules/cssl.py``,
  ``eop_level_list_cl_loss``): per anchor sentence, k1 positives = the k1 preceding sentences
  of its segment (a random one of the segment's sentences but its last when too few; the
  sentence itself in a one-sentence segment), k2 negatives = the k2 sentences right after its
  segment (random ones after it, or of the first segment for the last segment; after a
  random draw the official code goes on with the next index, which in a short document can
  land in the anchor's own segment: such a draw is redrawn here, so no negative ever shares
  the anchor's segment), and
  ``-log sum_P e^{cos/tau} / (sum_P e^{cos/tau} + sum_N e^{cos/tau})``: the denominator holds
  only the selected sentences.

Scoped to documents: the official code concatenates the sentences of the whole batch (the last
segment of one document takes the next document's opening sentences as negatives) and
averages every term over the sentences of the batch; here each document is its own list (the
last segment falls back on the first segment of its own document, the official rule for the
batch's last one), every term is a per-document mean, and the batch loss is the sum over
documents divided by the number of documents (a document without a scored sentence, or with
one segment for CSSL, adds 0). That is what makes a batch split over ranks give the same
loss and gradient as one process (tests/conformance/test_methods.py).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def per_document_mean(values: Tensor, valid: Tensor) -> Tensor:
    """sum over documents of the mean of ``values`` [B, S] over each one's ``valid`` entries,
    divided by B (a document without one adds 0)."""
    valid = valid.to(values.dtype)
    sums = (values * valid).sum(1)
    return (sums / valid.sum(1).clamp_min(1.0)).sum() / values.shape[0]


def scored_boundaries(labels: Tensor) -> Tensor:
    """bool [B, S]: the sentences L_TS scores: labelled (>= 0) and not a document's last."""
    valid = labels >= 0
    last = valid.sum(1, keepdim=True) - 1
    positions = torch.arange(labels.shape[1], device=labels.device)
    return valid & (positions[None, :] != last)


def segmentation_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """L_TS: ``logits`` [B, S, 2] (no boundary, boundary), ``labels`` [B, S] in {1, 0} (-1 on
    padding)."""
    valid = scored_boundaries(labels)
    losses = F.cross_entropy(logits.transpose(1, 2), labels.clamp_min(0), reduction="none")
    return per_document_mean(losses, valid)


def tssp_loss(logits: Tensor, order: Tensor) -> Tensor:
    """L_TSSP: ``logits`` [B, S, 3] of each disarrayed sentence, ``order`` [B, S] its class
    (-1 on padding)."""
    losses = F.cross_entropy(logits.transpose(1, 2), order.clamp_min(0), reduction="none")
    return per_document_mean(losses, order >= 0)


def segment_ids(boundary: list[int] | Tensor) -> list[int]:
    """The segment of each sentence from its boundary labels (1: a segment ends after it)."""
    ids, current = [], 0
    for label in [int(b) for b in boundary]:
        ids.append(current)
        current += label
    return ids


def cssl_indices(
    segments: list[int], k_pos: int, k_neg: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The official ``eop_list`` selection for one document whose sentence ``i`` is in segment
    ``segments[i]`` (non-decreasing, at least two segments): positives int [k_pos, n] and
    negatives int [k_neg, n], sentence indices."""
    n = len(segments)
    count = segments[-1] + 1
    starts = [segments.index(t) for t in range(count)]
    ends = [s - 1 for s in starts[1:]] + [n - 1]
    positives = np.zeros((k_pos, n), dtype=np.int64)
    negatives = np.zeros((k_neg, n), dtype=np.int64)
    for i, topic in enumerate(segments):
        start, end = starts[topic], ends[topic]
        choices = list(range(start, end)) or [end]
        j = i
        for k in range(k_pos):
            j -= 1
            if j < start:
                j = choices[int(rng.integers(len(choices)))]
            positives[k, i] = j
        after = list(range(end + 1, n)) or list(range(starts[0], starts[1]))
        j = end
        for k in range(k_neg):
            j += 1
            if j >= n or segments[j] == topic:
                j = after[int(rng.integers(len(after)))]
            negatives[k, i] = j
    return positives, negatives


def cssl_loss(features: Tensor, positives: Tensor, negatives: Tensor, tau: float) -> Tensor:
    """L_CSSL of one document: ``features`` [n, D] (anchors and candidates), ``positives``
    [k1, n] and ``negatives`` [k2, n] sentence indices; mean over the n anchors."""
    candidates = torch.cat([positives, negatives])  # [k1 + k2, n]
    logits = F.cosine_similarity(features[None], features[candidates], dim=-1) / tau
    k_pos = positives.shape[0]
    return (logits.logsumexp(0) - logits[:k_pos].logsumexp(0)).mean()


def batch_cssl_loss(
    features: Tensor, boundary: Tensor, seeds: Tensor, k_pos: int, k_neg: int, tau: float
) -> Tensor:
    """L_CSSL of a batch: ``features`` [B, S, D] contextual sentence vectors, ``boundary``
    [B, S] labels (-1 on padding), ``seeds`` [B] (each document's random fallbacks); the sum
    over documents with at least two segments divided by B."""
    total = features.new_zeros(())
    for doc in range(features.shape[0]):
        labels = boundary[doc][boundary[doc] >= 0]
        segments = segment_ids(labels)
        if segments[-1] < 1:
            continue
        rng = np.random.default_rng(int(seeds[doc]))
        positives, negatives = cssl_indices(segments, k_pos, k_neg, rng)
        pos, neg = (torch.as_tensor(x, device=features.device) for x in (positives, negatives))
        total = total + cssl_loss(features[doc, : len(segments)], pos, neg, tau)
    return total / features.shape[0]
