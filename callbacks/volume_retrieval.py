"""Volume retrieval (GRAM, Cicchetti et al., ICLR 2025, Sec. 4): an anchor (text) against the
tuple of the other modalities of each sample, ranked by the negative Gramian volume ``-V``
(:func:`~modules.losses.gram.gram_volume`) instead of a cosine: GRAM's headline text -> (video,
audio, ...) retrieval.

The tuple is the item side (one per ``item_id``: an item's image and sound), the anchor the
caption side (one per ``index``: each caption queries once), as
:class:`~callbacks.metrics.RetrievalMetrics` treats items and captions; with one sample per item
(the shapes families' evaluation) both sides are one row per sample. Keys:
``volume_retrieval/<anchor>_to_tuple/R1`` (R5, R10, median_rank, mean_rank),
``volume_retrieval/tuple_to_<anchor>/...`` and ``volume_retrieval/mean_R1``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from callbacks.evaluators import Evaluator, register
from callbacks.metrics import _PairedEmbeddings, _rank_summary
from modules.losses.gram import gram_volume


class VolumeRetrievalMetrics(_PairedEmbeddings):
    """R@K (percent), median and mean rank of anchor -> tuple and tuple -> anchor retrieval
    by ``-V`` over the whole split (rows synced across DDP ranks, de-duplicated by id).

    - anchor -> tuple: the rank of the anchor's own item among all distinct tuples;
    - tuple -> anchor: the best rank among all the item's anchors (its captions).

    Ranks are 1-based with pessimistic ties, as :class:`~callbacks.metrics.RetrievalMetrics`:
    1 + the number of negatives scoring at least as high as the best positive, every score of
    a query taken from the same volume computation. Volumes are computed in blocks of query
    rows so that the [rows, n, k, k] Gram matrices hold at most ``block_elements`` entries.
    """

    def __init__(
        self,
        anchor: str = "text",
        ks: tuple[int, ...] = (1, 5, 10),
        block_elements: int = 1 << 22,
        **kwargs: Any,
    ) -> None:
        super().__init__(modalities=("tuple", anchor), **kwargs)
        self.anchor, self.ks, self.block_elements = anchor, tuple(ks), block_elements

    def update(self, anchor: Tensor, others: Tensor, item_id: Tensor, index: Tensor) -> None:
        """L2-normalised anchors [B, D], the same samples' other modalities [B, k-1, D]."""
        batch, dim = anchor.shape
        if others.ndim != 3 or others.shape[0] != batch or others.shape[2] != dim:
            raise ValueError(
                f"others must be [B, k-1, D] = [{batch}, k-1, {dim}], got {tuple(others.shape)}"
            )
        super().update(others.flatten(1), anchor, item_id, index)

    def compute(self) -> dict[str, Tensor]:
        tuples, anchors, anchor_item = self._distinct()
        others = list(tuples.unflatten(1, (-1, anchors.shape[1])).unbind(dim=1))
        forward = self._anchor_to_tuple_ranks(anchors, others, anchor_item)
        backward = self._tuple_to_anchor_ranks(anchors, others, anchor_item)
        return _rank_summary(forward, self.ks, f"{self.anchor}_to_tuple") | _rank_summary(
            backward, self.ks, f"tuple_to_{self.anchor}"
        )

    def _rows_per_block(self, columns: int, k: int) -> int:
        return max(1, self.block_elements // max(columns * k * k, 1))

    def _anchor_to_tuple_ranks(
        self, anchors: Tensor, others: list[Tensor], anchor_item: Tensor
    ) -> Tensor:
        """Per anchor: the number of tuples scoring at least as high as its own (own included)."""
        ranks = []
        rows = self._rows_per_block(len(others[0]), len(others) + 1)
        for start in range(0, len(anchors), rows):
            stop = min(start + rows, len(anchors))
            scores = -gram_volume(anchors[start:stop], others)  # [rows, n_tuples]
            own = scores.gather(1, anchor_item[start:stop, None])
            ranks.append((scores >= own).count_nonzero(dim=1))
        return torch.cat(ranks)

    def _tuple_to_anchor_ranks(
        self, anchors: Tensor, others: list[Tensor], anchor_item: Tensor
    ) -> Tensor:
        """Per tuple: 1 + the number of other items' anchors scoring at least as high as its
        best anchor (its own anchors that reach the best are not counted)."""
        ranks = []
        rows = self._rows_per_block(len(anchors), len(others) + 1)
        for start in range(0, len(others[0]), rows):
            stop = min(start + rows, len(others[0]))
            block = [o[start:stop] for o in others]
            scores = -gram_volume(anchors, block).T  # [rows, n_anchors]
            mine = torch.nonzero((anchor_item >= start) & (anchor_item < stop)).squeeze(1)
            owner = anchor_item[mine] - start
            own = scores[owner, mine]
            best = torch.full((stop - start,), -torch.inf, dtype=scores.dtype, device=scores.device)
            best = best.scatter_reduce(0, owner, own, reduce="amax")
            tied = torch.zeros(stop - start, dtype=torch.long, device=scores.device)
            tied = tied.scatter_add(0, owner, (own >= best[owner]).long())
            ranks.append(1 + (scores >= best[:, None]).count_nonzero(dim=1) - tied)
        return torch.cat(ranks)


@register
class VolumeRetrieval(Evaluator):
    """GRAM's retrieval by ``-V`` (:class:`VolumeRetrievalMetrics`). Options: ``anchor``
    (default: the last encoder, text in the data families with more than two), ``modalities``
    (the tuple; default: every other encoder), ``ks``, ``block_elements``. Only methods that
    ask for it (``evaluators()``) or a YAML turn it on."""

    name = "volume_retrieval"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        encoders = tuple(module.modalities)
        self.anchor = options.get("anchor", encoders[-1])
        self.others = tuple(options.get("modalities") or (m for m in encoders if m != self.anchor))
        if self.anchor not in encoders or not set(self.others) <= set(encoders):
            raise ValueError(
                f"volume_retrieval: anchor {self.anchor!r} and modalities {list(self.others)} "
                f"must be among the encoders {list(encoders)}"
            )
        if not self.others or self.anchor in self.others:
            raise ValueError(
                f"volume_retrieval: the tuple {list(self.others)} must be non-empty and must not "
                f"contain the anchor {self.anchor!r}"
            )
        extra = {k: v for k, v in options.items() if k in ("ks", "block_elements")}
        if "ks" in extra:
            extra["ks"] = tuple(extra["ks"])
        self.metric = VolumeRetrievalMetrics(anchor=self.anchor, **extra).to(self.device)

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        emb = out["embeddings"]
        others = torch.stack([emb[m] for m in self.others], dim=1)
        self.metric.update(emb[self.anchor], others, out["item_id"], out["index"])

    def compute(self) -> dict[str, Tensor]:
        if not self.metric.update_count:
            return {}
        values = {f"volume_retrieval/{k}": v for k, v in self.metric.compute().items()}
        a = self.anchor
        r1 = [
            values[f"volume_retrieval/{a}_to_tuple/R1"],
            values[f"volume_retrieval/tuple_to_{a}/R1"],
        ]
        values["volume_retrieval/mean_R1"] = torch.stack(r1).mean()
        return values
