"""Semantic textual similarity: Spearman correlation of cosine similarities with gold scores."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from callbacks.metrics import _at_least_float32, first_occurrence


def average_ranks(x: Tensor) -> Tensor:
    """1-based ranks of ``x`` [N] in float64; tied values share the mean of the ranks they
    span (``scipy.stats.rankdata(method="average")``)."""
    ordered, order = x.sort(stable=True)
    _, group, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).double()  # the rank of the last member of each group
    ranks = torch.empty(len(x), dtype=torch.float64, device=x.device)
    ranks[order] = (last - (counts - 1).double() / 2)[group]
    return ranks


def spearman(x: Tensor, y: Tensor) -> Tensor:
    """Spearman's rho: the Pearson correlation of the average ranks (NaN for a constant input,
    as in scipy)."""
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return (rx * ry).sum() / (rx.norm() * ry.norm())


class STSSpearman(Metric):
    """STS score: Spearman rank correlation x 100 between the cosine similarity of each
    sentence pair's embeddings and its gold similarity score.

    This is the SentEval / SimCSE convention (``scipy.stats.spearmanr(cosine, gold) * 100`` over
    the whole test set, ties given average ranks), computed here without scipy. Cosine
    similarities are taken in ``update`` in float32 or better, so only one number per pair is
    stored; ``compute`` keeps one pair per ``index`` (drops DDP padding duplicates). NaN with
    fewer than two pairs or a constant similarity or score.
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("similarity", "score", "index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, a: Tensor, b: Tensor, scores: Tensor, index: Tensor) -> None:
        """Embeddings [B, D] of the first and second sentence of each pair, gold scores [B] and
        the pair's ``index`` [B]."""
        if not (a.shape == b.shape and len(a) == len(scores) == len(index)):
            raise ValueError("a and b must be [B, D], scores and index [B]")
        dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
        similarity = F.cosine_similarity(a.detach().to(dtype), b.detach().to(dtype), dim=1)
        self.similarity.append(similarity)
        self.score.append(_at_least_float32(scores.detach()))
        self.index.append(index.detach().long())

    def compute(self) -> Tensor:
        if isinstance(self.index, list) and not self.index:
            return torch.tensor(float("nan"), device=self.device)
        rows = first_occurrence(dim_zero_cat(self.index))
        if len(rows) < 2:
            return torch.tensor(float("nan"), device=self.device)
        similarity, score = dim_zero_cat(self.similarity)[rows], dim_zero_cat(self.score)[rows]
        return 100.0 * spearman(similarity, score)
