"""Evaluation metrics for paired embeddings, as torchmetrics ``Metric``s.

Every metric keeps its samples in list states reduced with ``"cat"``, so torchmetrics gathers
them across DDP ranks in ``compute()``. Each sample carries its ids (``index`` for an
(image, caption) pair, ``image_id`` for an image); ``compute()`` keeps the first occurrence of
every id, which drops the duplicates that a ``DistributedSampler`` pads in and collapses the
repeated image rows of a multi-caption dataset into one image each.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


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


def _at_least_float32(x: Tensor) -> Tensor:
    """bf16/fp16 embeddings to float32 for exact ranking; float64 stays float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class _PairedEmbeddings(Metric):
    """Stores (image, text) embedding rows with their ``image_id`` and ``index``."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("image", "text", "image_id", "index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, image: Tensor, text: Tensor, image_id: Tensor, index: Tensor) -> None:
        """Add one row per (image, caption) pair; images repeat once per caption."""
        if not (len(image) == len(text) == len(image_id) == len(index)):
            raise ValueError("image, text, image_id and index must have the same length")
        self.image.append(_at_least_float32(image.detach()))
        self.text.append(_at_least_float32(text.detach()))
        self.image_id.append(image_id.detach().long())
        self.index.append(index.detach().long())

    def _distinct(self) -> tuple[Tensor, Tensor, Tensor]:
        """Distinct images [Ni,D] (by image_id), distinct texts [Nt,D] (by index), and for each
        text the row of its image in the image matrix [Nt]."""
        image, text = dim_zero_cat(self.image), dim_zero_cat(self.text)
        image_id, index = dim_zero_cat(self.image_id), dim_zero_cat(self.index)
        img_rows = first_occurrence(image_id)
        txt_rows = first_occurrence(index)
        text_image = torch.searchsorted(image_id[img_rows], image_id[txt_rows])
        return image[img_rows], text[txt_rows], text_image


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

    Similarities are ``images @ texts.T`` over distinct images and distinct texts (embeddings are
    expected L2-normalised, i.e. cosine similarity).

    - image -> text: the rank of an image is the best (lowest) rank among *all* its captions, so
      a multi-caption dataset is not scored as if only one caption were correct.
    - text -> image: the rank of the caption's own image among all distinct images.

    Ranks are 1-based and ties are pessimistic: a query's rank is 1 + the number of *negatives*
    scoring at least as high as its best positive, so collapsed embeddings cannot score well,
    while captions that tie with each other do not push their image down.
    Every score a query is compared with comes from the same similarity product as the score of
    its positive, so exact ties stay exact. Ranks are computed in blocks of ``block_size`` query
    rows, so memory is O(block_size * N); each direction does its own product.
    """

    def __init__(self, ks: tuple[int, ...] = (1, 5, 10), block_size: int = 1024, **kwargs):
        super().__init__(**kwargs)
        self.ks = tuple(ks)
        self.block_size = block_size

    def compute(self) -> dict[str, Tensor]:
        distinct = self._distinct()
        i2t = _rank_summary(self._image_to_text_ranks(*distinct), self.ks, "image_to_text")
        t2i = _rank_summary(self._text_to_image_ranks(*distinct), self.ks, "text_to_image")
        return i2t | t2i

    def _image_to_text_ranks(self, image: Tensor, text: Tensor, text_image: Tensor) -> Tensor:
        ranks = []
        for start in range(0, len(image), self.block_size):
            stop = min(start + self.block_size, len(image))
            sims = image[start:stop] @ text.T
            rows = torch.arange(start, stop, device=image.device)
            negative = text_image[None, :] != rows[:, None]
            best = sims.masked_fill(negative, -math.inf).max(dim=1, keepdim=True).values
            ranks.append(1 + ((sims >= best) & negative).sum(dim=1))
        return torch.cat(ranks)

    def _text_to_image_ranks(self, image: Tensor, text: Tensor, text_image: Tensor) -> Tensor:
        ranks = []
        for start in range(0, len(text), self.block_size):
            stop = min(start + self.block_size, len(text))
            sims = text[start:stop] @ image.T
            own_column = text_image[start:stop, None]
            own = sims.gather(1, own_column)
            negative = torch.arange(len(image), device=image.device)[None, :] != own_column
            ranks.append(1 + ((sims >= own) & negative).sum(dim=1))
        return torch.cat(ranks)


def _log_mean_exp(values: Tensor) -> Tensor:
    return torch.logsumexp(values, dim=0) - math.log(len(values))


class AlignmentUniformity(_PairedEmbeddings):
    """Alignment and uniformity of Wang & Isola (2020), Eq. 4-5 with alpha = 2, t = 2.

    - ``alignment`` = E over positive (image, caption) pairs of ||x - y||^2 (distinct pairs).
    - ``uniformity/<modality>`` = log E over pairs of distinct items x != x' of
      exp(-2 ||x - x'||^2) (images distinct by image_id, texts by index).

    Both use the embeddings as given (the evaluation contract has them L2-normalised, as the
    paper assumes). Uniformity uses all pairs of up to ``max_items`` items per modality; beyond
    that, ``max_items`` items evenly spaced over the id-sorted set (a deterministic subsample).
    """

    def __init__(self, max_items: int = 4096, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_items = max_items

    def compute(self) -> dict[str, Tensor]:
        image, text, text_image = self._distinct()
        alignment = (image[text_image] - text).pow(2).sum(dim=1).mean()
        return {
            "alignment": alignment,
            "uniformity/image": self._uniformity(image),
            "uniformity/text": self._uniformity(text),
        }

    def _uniformity(self, x: Tensor) -> Tensor:
        if len(x) > self.max_items:
            pick = torch.linspace(0, len(x) - 1, self.max_items, device=x.device).round().long()
            x = x[pick]
        return _log_mean_exp(torch.pdist(x, p=2).pow(2).mul(-2.0))


class ModalityGap(_PairedEmbeddings):
    """Modality gap of Liang et al. (2022): ||mean_i x_i / |x_i| - mean_j y_j / |y_j|||.

    Means are over distinct images (by image_id) and distinct texts (by index), so an image with
    five captions counts once. ``normalize=False`` measures the raw (unnormalised) features
    instead, reported as ``modality_gap_raw``: the gap that losses on raw features (such as
    CLIP-Refine's RaFA) act on.
    """

    def __init__(self, normalize: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.normalize = normalize

    def compute(self) -> dict[str, Tensor]:
        image, text, _ = self._distinct()
        if self.normalize:
            image, text = F.normalize(image, dim=1), F.normalize(text, dim=1)
        gap = (image.mean(dim=0) - text.mean(dim=0)).norm()
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
