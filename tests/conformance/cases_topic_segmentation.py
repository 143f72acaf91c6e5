"""TSSP + CSSL's losses (modules/losses/topic_segmentation.py) on 2 processes against loop
references written here: each loss is a per-document mean summed over documents and divided by
the batch size, so the mean of the ranks' losses is the global batch's."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from modules.losses.topic_segmentation import (
    batch_cssl_loss,
    cssl_indices,
    segment_ids,
    segmentation_loss,
    tssp_loss,
)
from tests.conformance.kit import LossCase, randn

B, S = 4, 7
#: Boundary labels per document (1: a segment ends here; -1: padding), 2-3 segments each.
BOUNDARY = torch.tensor(
    [
        [0, 1, 0, 0, 1, 0, 1],
        [1, 0, 1, 0, 1, -1, -1],
        [0, 0, 1, 0, 0, 0, 1],
        [0, 1, 1, 0, 1, -1, -1],
    ]
)
ORDER = torch.tensor(
    [[0, 2, 1, 0, 2, 1, 0], [2, 0, 1, 1, 0, -1, -1], [0, 1, 2, 0, 0, 1, 2], [1, 2, 0, 0, 1, -1, -1]]
)


def slow_segmentation(logits, labels):
    total = logits.new_zeros(())
    for doc in range(len(labels)):
        valid = [s for s in range(labels.shape[1]) if labels[doc, s] >= 0]
        scored = valid[:-1]  # a document's last sentence is not scored
        terms = [-logits[doc, s].log_softmax(0)[labels[doc, s]] for s in scored]
        total = total + (torch.stack(terms).mean() if terms else 0.0)
    return total / len(labels)


def slow_tssp(logits, order):
    total = logits.new_zeros(())
    for doc in range(len(order)):
        terms = [
            -logits[doc, s].log_softmax(0)[order[doc, s]]
            for s in range(order.shape[1])
            if order[doc, s] >= 0
        ]
        total = total + torch.stack(terms).mean()
    return total / len(order)


def slow_cssl(features, boundary, seeds):
    total = features.new_zeros(())
    for doc in range(len(boundary)):
        labels = boundary[doc][boundary[doc] >= 0]
        segments = segment_ids(labels)
        if segments[-1] < 1:
            continue
        positives, negatives = cssl_indices(segments, 1, 3, np.random.default_rng(int(seeds[doc])))
        terms = []
        for i in range(len(segments)):
            sims = [
                F.cosine_similarity(features[doc, i], features[doc, int(j)], dim=0) / 0.1
                for j in [*positives[:, i], *negatives[:, i]]
            ]
            sims = torch.stack(sims)
            terms.append(sims.logsumexp(0) - sims[: positives.shape[0]].logsumexp(0))
        total = total + torch.stack(terms).mean()
    return total / len(boundary)


CASES = [
    LossCase(
        name="topic_segmentation/boundaries",
        inputs=lambda g: {"logits": randn(g, B, S, 2), "labels": BOUNDARY.clone()},
        per_sample=("logits", "labels"),
        loss=segmentation_loss,
        reference=slow_segmentation,
        differentiable=("logits",),
    ),
    LossCase(
        name="topic_segmentation/tssp",
        inputs=lambda g: {"logits": randn(g, B, S, 3), "order": ORDER.clone()},
        per_sample=("logits", "order"),
        loss=tssp_loss,
        reference=slow_tssp,
        differentiable=("logits",),
    ),
    LossCase(
        name="topic_segmentation/cssl",
        inputs=lambda g: {
            "features": randn(g, B, S, 5),
            "boundary": BOUNDARY.clone(),
            "seeds": torch.tensor([3, 1, 4, 1]),
        },
        per_sample=("features", "boundary", "seeds"),
        loss=lambda features, boundary, seeds: batch_cssl_loss(
            features, boundary, seeds, k_pos=1, k_neg=3, tau=0.1
        ),
        reference=slow_cssl,
        differentiable=("features",),
    ),
]
