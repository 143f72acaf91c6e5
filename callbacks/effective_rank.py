"""Effective rank (Roy & Vetterli, "The effective rank: a measure of effective
dimensionality", EUSIPCO 2007) of one encoder's embeddings: how many dimensions the
representation actually spreads over (a dimensional-collapse measure; the multi-view paper's
claim is that more views use more of them).

With the singular values ``sigma_k`` of the embedding matrix, ``p_k = sigma_k / sum_k sigma_k``
and ``erank = exp(-sum_k p_k log p_k)``: between 1 (one direction) and ``min(n, D)`` (all
singular values equal).

Which matrix: the L2-normalised embeddings (what k-NN and class retrieval compare), one row per
distinct item (by ``item_id``), **centred** (the mean row subtracted). Centring makes it the
effective rank of the covariance, the spread *around* the mean: contrastive embeddings on the
sphere often sit in a cone, whose common mean direction would otherwise add one large singular
value that says where the cone points, not how many directions the items use (it would pull
the measure towards 1 and mix the cone's width into it). RankMe (Garrido et al., ICML 2023)
does not centre; the two differ by about that one direction.

Cheap: at most ``max_items`` items (default 4 096), beyond that evenly spaced over the id-sorted
set (a deterministic subsample, as the uniformity of callbacks/metrics.py), and one SVD in
float64 of a [<= 4 096, D] matrix.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from callbacks.evaluators import Evaluator, option_modality, register
from callbacks.metrics import first_occurrence


def effective_rank(x: Tensor) -> Tensor:
    """Roy & Vetterli's effective rank of the rows of ``x`` [n, D] after centring them (NaN
    with fewer than 2 rows or no spread at all: identical rows)."""
    x = x.double()
    x = x - x.mean(dim=0)
    sigma = torch.linalg.svdvals(x)
    total = sigma.sum()
    if len(x) < 2 or total <= 0:
        return torch.tensor(float("nan"), dtype=torch.float64, device=x.device)
    p = sigma / total
    p = p[p > 0]
    return torch.exp(-(p * p.log()).sum())


class EffectiveRank(Metric):
    """The effective rank of the distinct items' embeddings (synced across DDP ranks as
    concatenated states, then de-duplicated by ``item_id`` and capped at ``max_items``)."""

    full_state_update = False

    def __init__(self, max_items: int = 4096, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_items = max_items
        self.add_state("embedding", default=[], dist_reduce_fx="cat")
        self.add_state("item_id", default=[], dist_reduce_fx="cat")

    def update(self, embedding: Tensor, item_id: Tensor) -> None:
        """Embeddings [B, D] and their ``item_id`` [B]."""
        self.embedding.append(embedding.detach().double())
        self.item_id.append(item_id.detach().long())

    def compute(self) -> Tensor:
        rows = first_occurrence(dim_zero_cat(self.item_id))
        x = dim_zero_cat(self.embedding)[rows]
        if len(x) > self.max_items:
            pick = torch.linspace(0, len(x) - 1, self.max_items, device=x.device).round().long()
            x = x[pick]
        return effective_rank(x).float()


@register
class EffectiveRankEvaluator(Evaluator):
    """``effective_rank``: :class:`EffectiveRank` of one encoder's normalised embeddings.
    Options: ``modality`` (default: the first encoder), ``max_items`` (4 096). On by default
    for one-encoder methods on labelled data (the single-modality families: shapes_views,
    shapes_sizes)."""

    name = "effective_rank"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        self.side = option_modality(self.name, module, options)
        self.metric = EffectiveRank(max_items=options.get("max_items", 4096)).to(self.device)

    @classmethod
    def applies(cls, module: Any, datamodule: Any) -> bool:
        return len(module.modalities) == 1 and bool(getattr(datamodule, "labels", None))

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        self.metric.update(out["embeddings"][self.side], out["item_id"])

    def compute(self) -> dict[str, Tensor]:
        if not self.metric.update_count:
            return {}
        return {"effective_rank": self.metric.compute()}
