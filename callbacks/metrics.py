"""Evaluation metrics for paired embeddings, as torchmetrics ``Metric``s.

Every metric keeps its samples in list states reduced with ``"cat"``, so torchmetrics gathers
them across DDP ranks in ``compute()``. A pair has an *item* side (an image, a clip, a study)
and a *caption* side (its caption, report or audio); ``modalities`` names the two sides in the
metric names (``image_to_text/R1``, ``uniformity/video``). Each sample carries its ids (``index``
for an (item, caption) pair, ``item_id`` for an item); ``compute()`` keeps the first occurrence
of every id, which drops the duplicates that a ``DistributedSampler`` pads in and collapses the
repeated item rows of a multi-caption dataset into one item each.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_auroc as _torchmetrics_auroc
from torchmetrics.utilities import dim_zero_cat

from callbacks.retrieval_ranks import RetrievalRanks, retrieval_ranks
from modules.losses.contrastive_gap import uniformity

MRV_KINDS = ("std", "var")


def first_occurrence(ids: Tensor) -> Tensor:
    """Positions of the first row of each distinct id, ordered by id.

    Sorting first makes the result independent of the order in which ranks and batches
    delivered the rows.
    """
    order = torch.argsort(ids, stable=True)
    sorted_ids = ids[order]
    keep = torch.ones_like(sorted_ids, dtype=torch.bool)
    keep[1:] = sorted_ids[1:] != sorted_ids[:-1]
    return order[keep]


def _check_one_item_per_caption(index: Tensor, item_id: Tensor, caption_rows: Tensor) -> None:
    """A caption ``index`` shared by two ``item_id`` s would leave one item without its caption
    (scored as if it had none): refuse it rather than rank it last."""
    first_item = item_id[caption_rows][torch.searchsorted(index[caption_rows], index)]
    clash = (first_item != item_id).nonzero()
    if len(clash):
        row = int(clash[0])
        raise ValueError(
            f"caption index {int(index[row])} belongs to item_id {int(first_item[row])} and "
            f"{int(item_id[row])}: each caption index must name one item"
        )


def _at_least_float32(x: Tensor) -> Tensor:
    """bf16/fp16 embeddings to float32 for exact ranking; float64 stays float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class _PairedEmbeddings(Metric):
    """Stores (item, caption) embedding rows with their ``item_id`` and ``index``."""

    full_state_update = False

    def __init__(self, modalities: tuple[str, str] = ("image", "text"), **kwargs) -> None:
        super().__init__(**kwargs)
        self.modalities = tuple(modalities)
        for name in ("item", "caption", "item_id", "index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, item: Tensor, caption: Tensor, item_id: Tensor, index: Tensor) -> None:
        """Add one row per (item, caption) pair; items repeat once per caption."""
        if not (len(item) == len(caption) == len(item_id) == len(index)):
            raise ValueError("item, caption, item_id and index must have the same length")
        self.item.append(_at_least_float32(item.detach()))
        self.caption.append(_at_least_float32(caption.detach()))
        self.item_id.append(item_id.detach().long())
        self.index.append(index.detach().long())

    def _distinct(self) -> tuple[Tensor, Tensor, Tensor]:
        """Distinct items [Ni,D] (by item_id), distinct captions [Nc,D] (by index), and for
        each caption the row of its item in the item matrix [Nc]."""
        item, caption = dim_zero_cat(self.item), dim_zero_cat(self.caption)
        item_id, index = dim_zero_cat(self.item_id), dim_zero_cat(self.index)
        item_rows = first_occurrence(item_id)
        caption_rows = first_occurrence(index)
        _check_one_item_per_caption(index, item_id, caption_rows)
        caption_item = torch.searchsorted(item_id[item_rows], item_id[caption_rows])
        return item[item_rows], caption[caption_rows], caption_item


def _rank_summary(ranks: Tensor, ks: tuple[int, ...], prefix: str) -> dict[str, Tensor]:
    """R@K in percent, median rank (numpy convention: mean of the two middle values for an
    even count) and mean rank, all from 1-based ranks."""
    ranks = ranks.float()
    ordered = ranks.sort().values
    n = len(ordered)
    out = {f"{prefix}/R{k}": 100.0 * (ranks <= k).float().mean() for k in ks}
    out[f"{prefix}/median_rank"] = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
    out[f"{prefix}/mean_rank"] = ranks.mean()
    return out


class RetrievalMetrics(_PairedEmbeddings):
    """Cross-modal retrieval recall R@K (percent, 0-100), median and mean rank, both directions.

    Similarities are ``items @ captions.T`` over distinct items and distinct captions
    (embeddings are expected L2-normalised, i.e. cosine similarity). Keys are
    ``<item>_to_<caption>/R1`` etc., with the names of ``modalities``.

    - item -> caption: the rank of an item is the best (lowest) rank among *all* its captions,
      so a multi-caption dataset is not scored as if only one caption were correct.
    - caption -> item: the rank of the caption's own item among all distinct items.

    Ranks are 1-based and ties are pessimistic: a query's rank is 1 + the number of *negatives*
    scoring at least as high as its best positive, so collapsed embeddings cannot score well,
    while captions that tie with each other do not push their image down. Where a tie changes
    any rank (identical captions of different items, e.g. templated or class-name captions),
    ``compute`` also reports ``R<K>_optimistic``: 1 + the negatives scoring strictly higher,
    the value that top-k-by-index evaluation (CLIP_benchmark) reports for such data.
    Both directions' ranks come from one similarity product, computed in tiles of at most
    ``block_size`` query rows and ``block_elements`` scores (callbacks/retrieval_ranks.py), so
    memory stays bounded however large N is; a positive's score and every score it is compared
    with come from the same tile product, so exact ties stay exact.
    """

    def __init__(
        self,
        ks: tuple[int, ...] = (1, 5, 10),
        block_size: int = 1024,
        block_elements: int = 1 << 20,
        modalities: tuple[str, str] = ("image", "text"),
        **kwargs,
    ) -> None:
        super().__init__(modalities, **kwargs)
        self.ks = tuple(ks)
        self.block_size = block_size
        self.block_elements = block_elements

    def compute(self) -> dict[str, Tensor]:
        return self._summary(self._ranks())

    def _ranks(self) -> RetrievalRanks:
        return retrieval_ranks(*self._distinct(), self.block_size, self.block_elements)

    def _summary(self, ranks: RetrievalRanks) -> dict[str, Tensor]:
        a, b = self.modalities
        out: dict[str, Tensor] = {}
        for prefix, pessimistic, optimistic in (
            (f"{a}_to_{b}", ranks.item, ranks.item_optimistic),
            (f"{b}_to_{a}", ranks.caption, ranks.caption_optimistic),
        ):
            out |= _rank_summary(pessimistic, self.ks, prefix)
            if not torch.equal(pessimistic, optimistic):
                optimistic = optimistic.float()
                for k in self.ks:
                    out[f"{prefix}/R{k}_optimistic"] = 100.0 * (optimistic <= k).float().mean()
        return out


class RetrievalWithRanks(RetrievalMetrics):
    """:class:`RetrievalMetrics` whose ``compute`` also returns each query's rank (synced across
    ranks like the summary): ``ranks/item`` per distinct item in ``item_id`` order and
    ``ranks/caption`` per distinct caption in ``index`` order."""

    def compute(self) -> dict[str, Tensor]:
        ranks = self._ranks()
        return {**self._summary(ranks), "ranks/item": ranks.item, "ranks/caption": ranks.caption}


def mean_rank_variance(ranks: Tensor, kind: str = "std") -> Tensor:
    """Mean Rank Variance (Nie et al. 2024) of ``ranks`` [K, N] (rank of instance ``n`` in
    language ``k``): the mean over instances of the population standard deviation (``std``,
    the released analysis code) or variance (``var``) over languages."""
    if kind not in MRV_KINDS:
        raise ValueError(f"kind must be one of {MRV_KINDS}, got {kind!r}")
    ranks = ranks.double()
    spread = ranks.var(dim=0, correction=0) if kind == "var" else ranks.std(dim=0, correction=0)
    return spread.mean()


class AlignmentUniformity(_PairedEmbeddings):
    """Alignment and uniformity of Wang & Isola (2020), Eq. 4-5 with alpha = 2, t = 2.

    - ``alignment`` = E over positive (item, caption) pairs of ||x - y||^2 (distinct pairs).
    - ``uniformity/<modality>`` = log E over pairs of distinct embeddings x != x' of
      exp(-2 ||x - x'||^2) (items distinct by item_id, captions by index).

    Both use the embeddings as given (the evaluation contract has them L2-normalised, as the
    paper assumes). Uniformity uses all pairs of up to ``max_items`` items per modality; beyond
    that, ``max_items`` items evenly spaced over the id-sorted set (a deterministic subsample).
    """

    def __init__(
        self, max_items: int = 4096, modalities: tuple[str, str] = ("image", "text"), **kwargs
    ) -> None:
        super().__init__(modalities, **kwargs)
        self.max_items = max_items

    def compute(self) -> dict[str, Tensor]:
        item, caption, caption_item = self._distinct()
        alignment = (item[caption_item] - caption).pow(2).sum(dim=1).mean()
        return {
            "alignment": alignment,
            f"uniformity/{self.modalities[0]}": self._uniformity(item),
            f"uniformity/{self.modalities[1]}": self._uniformity(caption),
        }

    def _uniformity(self, x: Tensor) -> Tensor:
        if len(x) > self.max_items:
            pick = torch.linspace(0, len(x) - 1, self.max_items, device=x.device).round().long()
            x = x[pick]
        return uniformity(x, t=2.0)


class ModalityGap(_PairedEmbeddings):
    """Modality gap of Liang et al. (2022): ||mean_i x_i / |x_i| - mean_j y_j / |y_j|||.

    Means are over distinct items (by item_id) and distinct captions (by index), so an image
    with five captions counts once. ``normalize=False`` measures the raw (unnormalised) features
    instead, reported as ``modality_gap_raw``: the gap that losses on raw features (such as
    CLIP-Refine's RaFA) act on.
    """

    def __init__(
        self, normalize: bool = True, modalities: tuple[str, str] = ("image", "text"), **kwargs
    ) -> None:
        super().__init__(modalities, **kwargs)
        self.normalize = normalize

    def compute(self) -> dict[str, Tensor]:
        item, caption, _ = self._distinct()
        if self.normalize:
            item, caption = F.normalize(item, dim=1), F.normalize(caption, dim=1)
        gap = (item.mean(dim=0) - caption.mean(dim=0)).norm()
        return {"modality_gap" if self.normalize else "modality_gap_raw": gap}


class ZeroShotAccuracy(Metric):
    """Top-1 zero-shot classification accuracy in percent (0-100).

    ``update`` takes logits [B,C] (arg-maxed) or predicted class ids [B]; rows whose label is -1
    (task not applicable) are ignored; ``compute`` keeps one row per ``index`` (drops DDP
    padding duplicates). With no labelled sample the accuracy is NaN.
    """

    full_state_update = False

    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        for name in ("preds", "labels", "index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, labels: Tensor, index: Tensor) -> None:
        if preds.ndim == 2:
            if preds.shape[1] != self.num_classes:
                raise ValueError(
                    f"expected {self.num_classes} logits per row, got {preds.shape[1]}"
                )
            preds = preds.argmax(dim=1)
        valid = labels >= 0
        if bool((labels[valid] >= self.num_classes).any()):
            raise ValueError(f"labels must be -1 or in [0, {self.num_classes})")
        self.preds.append(preds[valid].detach().long())
        self.labels.append(labels[valid].detach().long())
        self.index.append(index[valid].detach().long())

    def compute(self) -> Tensor:
        preds, labels = dim_zero_cat(self.preds), dim_zero_cat(self.labels)
        rows = first_occurrence(dim_zero_cat(self.index))
        if len(rows) == 0:
            return torch.tensor(float("nan"), device=preds.device)
        return 100.0 * (preds[rows] == labels[rows]).float().mean()


def binary_auroc(scores: Tensor, labels: Tensor) -> Tensor:
    """Area under the ROC curve of ``scores`` for ``labels`` in {0, 1} (torchmetrics' exact
    computation); NaN when only one class is present, where the AUROC is undefined."""
    if labels.numel() == 0 or bool((labels == labels[0]).all()):
        return torch.tensor(float("nan"), device=scores.device)
    return _torchmetrics_auroc(scores.float(), labels.long())


class ZeroShotAUROC(Metric):
    """AUROC of one yes/no task (e.g. a finding) from scores, one row per ``index``.

    ``update`` takes scores [B] (higher = "yes"), labels [B] in {0, 1} (-1 = unknown, ignored)
    and ``index`` (DDP padding duplicates are dropped in ``compute``).
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("scores", "labels", "index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, scores: Tensor, labels: Tensor, index: Tensor) -> None:
        valid = labels >= 0
        if bool((labels[valid] > 1).any()):
            raise ValueError("labels must be -1 (unknown), 0 or 1")
        self.scores.append(_at_least_float32(scores[valid].detach()))
        self.labels.append(labels[valid].detach().long())
        self.index.append(index[valid].detach().long())

    def compute(self) -> Tensor:
        rows = first_occurrence(dim_zero_cat(self.index))
        return binary_auroc(dim_zero_cat(self.scores)[rows], dim_zero_cat(self.labels)[rows])


class ChoiceAccuracy(Metric):
    """Two-alternative choice between a sample's true pair and a wrong candidate (a shifted
    clip, another face): ``accuracy`` is the percentage of samples whose true pair scores
    higher by more than ``tie_tolerance`` (ties count as wrong: a model blind to the difference
    scores 0, not 50, even when float rounding separates its two equal scores); ``auroc`` pools
    all true and wrong pairs and asks whether one threshold on the score separates them ("is
    this pair in sync?")."""

    full_state_update = False

    def __init__(self, tie_tolerance: float = 1e-5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tie_tolerance = tie_tolerance
        for name in ("positive", "negative", "index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, positive: Tensor, negative: Tensor, index: Tensor) -> None:
        """Scores [B] of each sample's true pair and of its wrong candidate."""
        if not (len(positive) == len(negative) == len(index)):
            raise ValueError("positive, negative and index must have the same length")
        self.positive.append(_at_least_float32(positive.detach()))
        self.negative.append(_at_least_float32(negative.detach()))
        self.index.append(index.detach().long())

    def compute(self) -> dict[str, Tensor]:
        rows = first_occurrence(dim_zero_cat(self.index))
        positive, negative = dim_zero_cat(self.positive)[rows], dim_zero_cat(self.negative)[rows]
        labels = torch.cat([torch.ones_like(positive), torch.zeros_like(negative)])
        return {
            "accuracy": 100.0 * (positive - negative > self.tie_tolerance).float().mean(),
            "auroc": binary_auroc(torch.cat([positive, negative]), labels),
        }


class ClassRetrieval(Metric):
    """Image-to-image retrieval by class: every distinct item (by ``item_id``) queries all the
    others (itself excluded); the items of its class are the positives.

    - ``R1``: percentage of queries whose nearest other item is of their class; ties are
      pessimistic (a negative scoring as high as the best positive counts as ahead of it).
    - ``mAP``: mean over queries of the average precision, with the precision at a positive of
      score ``x`` taken as (positives scoring >= x) / (items scoring >= x) (pessimistic ties;
      exact AP without ties). Collapsed embeddings score the class frequency.

    Queries without another item of their class, and rows with class -1, are left out.
    """

    full_state_update = False

    def __init__(self, block_size: int = 512, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.block_size = block_size
        for name in ("embedding", "label", "item_id"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, embedding: Tensor, label: Tensor, item_id: Tensor) -> None:
        """L2-normalised item embeddings [B, D], their class [B] and ``item_id`` [B]."""
        self.embedding.append(embedding.detach().float())
        self.label.append(label.detach().long())
        self.item_id.append(item_id.detach().long())

    def compute(self) -> dict[str, Tensor]:
        rows = first_occurrence(dim_zero_cat(self.item_id))
        embedding, label = dim_zero_cat(self.embedding)[rows], dim_zero_cat(self.label)[rows]
        keep = label >= 0
        embedding, label = embedding[keep], label[keep]
        n = len(label)

        def at_least(sorted_rows: Tensor, x: Tensor) -> Tensor:
            """Per row, how many of the row's values are >= each entry of ``x``."""
            return n - torch.searchsorted(sorted_rows, x.contiguous(), side="left")

        hits, precisions = [], []
        for start in range(0, n, self.block_size):
            stop = min(start + self.block_size, n)
            scores = embedding[start:stop] @ embedding.T
            own = torch.arange(start, stop, device=scores.device)
            scores[own - start, own] = -torch.inf  # the query itself
            positive = label[start:stop, None] == label[None, :]
            positive[own - start, own] = False
            positive_scores = torch.where(positive, scores, -torch.inf)
            all_sorted = scores.sort(dim=1).values
            positive_sorted = positive_scores.sort(dim=1).values
            count = positive.sum(dim=1)
            valid = count > 0
            best = positive_scores.max(dim=1, keepdim=True).values
            ahead = at_least(all_sorted, best) - at_least(positive_sorted, best)
            hits.append((ahead == 0).squeeze(1)[valid])
            ranked = at_least(all_sorted, scores).clamp_min(1)
            precision = at_least(positive_sorted, scores) / ranked
            ap = (precision * positive).sum(dim=1) / count.clamp_min(1)
            precisions.append(ap[valid])
        hit = torch.cat(hits).float() if hits else embedding.new_empty(0)
        ap = torch.cat(precisions).float() if precisions else embedding.new_empty(0)
        if len(hit) == 0:
            nan = torch.tensor(float("nan"), device=embedding.device)
            return {"R1": nan, "mAP": nan.clone()}
        return {"R1": 100.0 * hit.mean(), "mAP": 100.0 * ap.mean()}
