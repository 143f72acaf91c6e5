"""Semantic shift detection across two corpora (CADE, methods/part2.md Sec. 51): each word's
shift score is the cosine distance between its two corpus embeddings (``corpus_a``,
``corpus_b``: compass-aligned slices, or spaces aligned by Procrustes), ranked against the gold
shifted words (``label/shifted``: 1 shifted, 0 kept, -1 not in both vocabularies: left out).

Keys: ``semantic_shift/auroc`` (the probability that a shifted word scores above a kept one),
``semantic_shift/average_precision`` (mean of the precision at each shifted word's rank) and
``semantic_shift/precision_at_k`` (the fraction of shifted words among the ``k`` top-scored
words, ``k`` = the number of shifted words: R-precision).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from callbacks.evaluators import Evaluator, register
from callbacks.metrics import _at_least_float32, binary_auroc, first_occurrence


def average_precision(scores: Tensor, labels: Tensor) -> Tensor:
    """Mean over positives of the precision among the words scored at least as high
    (ties counted pessimistically); NaN without a positive."""
    positive = labels.bool()
    if not positive.any():
        return torch.tensor(float("nan"), device=scores.device)
    above = (scores[None, :] >= scores[positive][:, None]).sum(dim=1).float()
    positives_above = (scores[None, positive] >= scores[positive][:, None]).sum(dim=1).float()
    return (positives_above / above).mean()


def precision_at_k(scores: Tensor, labels: Tensor, k: int) -> Tensor:
    """The fraction of positives among the ``k`` highest scores (stable order on ties)."""
    order = scores.argsort(descending=True, stable=True)
    return labels[order[:k]].float().mean()


class SemanticShiftRanking(Metric):
    """AUROC, AP and R-precision of the words' shift scores (rows synced across DDP ranks,
    de-duplicated by ``index``)."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("score", "shifted", "index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, a: Tensor, b: Tensor, shifted: Tensor, index: Tensor) -> None:
        """Each word's embeddings [B, D] in the two corpora, its gold flag [B] and id [B]."""
        dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
        self.score.append(1 - F.cosine_similarity(a.detach().to(dtype), b.detach().to(dtype)))
        self.shifted.append(shifted.detach().long())
        self.index.append(index.detach().long())

    def compute(self) -> dict[str, Tensor]:
        rows = first_occurrence(dim_zero_cat(self.index))
        score, shifted = dim_zero_cat(self.score)[rows], dim_zero_cat(self.shifted)[rows]
        known = shifted >= 0
        score, shifted = _at_least_float32(score[known]), shifted[known]
        count = int(shifted.sum())
        if not count or count == len(shifted):
            return {}
        return {
            "auroc": binary_auroc(score, shifted),
            "average_precision": average_precision(score, shifted),
            "precision_at_k": precision_at_k(score, shifted, count),
        }


@register
class SemanticShift(Evaluator):
    """Shift ranking (:class:`SemanticShiftRanking`) of ``corpus_a`` vs ``corpus_b`` on data
    that carries ``label/shifted`` (``word_corpora`` in ``periods`` mode)."""

    name = "semantic_shift"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        self.pair = tuple(module.modalities[:2])
        self.metric = SemanticShiftRanking().to(self.device)

    @classmethod
    def applies(cls, module: Any, datamodule: Any) -> bool:
        cfg = getattr(datamodule, "cfg", None)
        return getattr(cfg, "family", "") == "word_corpora" and cfg.mode == "periods"

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        if "shifted" not in out["labels"]:
            return
        a, b = self.pair
        emb = out["embeddings"]
        self.metric.update(emb[a], emb[b], out["labels"]["shifted"], out["index"])

    def compute(self) -> dict[str, Tensor]:
        if not self.metric.update_count:
            return {}
        return {f"semantic_shift/{k}": v for k, v in self.metric.compute().items()}
