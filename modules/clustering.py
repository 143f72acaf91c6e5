"""k-means with k-means++ seeding, in torch, deterministic from a seed.

Used by MCL to cluster a stage's embeddings of the training set; small enough to test against a
brute-force assignment, and free of a scikit-learn dependency.
"""

from __future__ import annotations

import torch
from torch import Tensor


def kmeans(x: Tensor, k: int, iters: int = 50, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(labels [N] int64, centres [k, D]) of Lloyd's k-means on the rows of ``x``, seeded by
    k-means++ (Arthur & Vassilvitskii 2007); stops early when no label changes. An emptied
    cluster keeps its previous centre."""
    if not 1 <= k <= len(x):
        raise ValueError(f"k must be in [1, {len(x)}] (the number of rows), got {k}")
    x = x.double()
    generator = torch.Generator().manual_seed(seed)
    centres = x[torch.randint(len(x), (1,), generator=generator)]
    for _ in range(1, k):
        nearest = torch.cdist(x, centres).min(dim=1).values.pow(2)
        pick = torch.multinomial(nearest / nearest.sum(), 1, generator=generator)
        centres = torch.cat([centres, x[pick]])
    labels = torch.full((len(x),), -1, dtype=torch.long)
    for _ in range(iters):
        new = torch.cdist(x, centres).argmin(dim=1)
        if torch.equal(new, labels):
            break
        labels = new
        for c in range(k):
            members = x[labels == c]
            if len(members):
                centres[c] = members.mean(dim=0)
    return labels, centres


def joint_labels(stage_labels: list[Tensor], k: int) -> Tensor:
    """One group per combination of earlier stages' clusters (MCL):
    ``y_i = sum_r c_i^(r) k^(s-1-r)``, the mixed-radix number of the assignments in stage order;
    ``k ** len(stage_labels)`` possible groups."""
    return combined_class(stage_labels, [k] * len(stage_labels))


def combined_class(labels: list[Tensor], sizes: list[int]) -> Tensor:
    """One class id per row from several labels: the mixed-radix number of the label values
    (``sizes[i]`` values for label ``i``, the first varying slowest); -1 where a label is < 0."""
    ids = torch.zeros_like(labels[0])
    missing = torch.zeros_like(ids, dtype=torch.bool)
    for values, size in zip(labels, sizes, strict=True):
        ids = ids * size + values
        missing |= values < 0
    return ids.masked_fill(missing, -1)
