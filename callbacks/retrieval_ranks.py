"""Retrieval ranks of both directions from one similarity product, in cache-sized tiles.

``S = items @ captions.T`` holds every score both directions need: a row of S ranks an item's
captions (item -> caption), a column ranks a caption's items (caption -> item). The product is
computed tile by tile and each tile is counted against both directions' thresholds while it is
in cache, so the N x N scores are computed once and never written to memory as a whole.

Ties: a rank counts the negatives scoring at least as high as the positive (pessimistic) and,
separately, strictly higher (optimistic). Exact ties stay exact because a positive's score is
read from the same tile product (same operands, same shape, same call) as every score it is
compared with: a first pass computes only the tiles that hold positives (captions are grouped
by item, so these lie along the diagonal) to read the thresholds, the second pass computes
every tile and counts.

Counting: a tile's rows (and columns) whose maximum is below their
threshold add nothing and are skipped; on a trained model that is most of them, since a query's
positive outscores most of the gallery. The others get ``sign(S - t)``, whose sum
(``#above - #below``) and L1 norm (``#above + #below``) give the counts above and equal to the
threshold; sums of +-1 are exact in float32 up to 2^24 per line.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class RetrievalRanks:
    """1-based ranks: per distinct item (item -> caption) and per distinct caption (caption ->
    item), pessimistic (ties against the query) and optimistic (ties for it)."""

    item: Tensor
    item_optimistic: Tensor
    caption: Tensor
    caption_optimistic: Tensor


def _spans(total: int, step: int) -> Iterator[slice]:
    for start in range(0, total, step):
        yield slice(start, min(start + step, total))


class _Tiles:
    """The tiles of ``items @ captions.T``, each computed by the same call whenever visited."""

    def __init__(self, items: Tensor, captions: Tensor, rows: int, cols: int) -> None:
        self.items, self.captions_t = items, captions.T.contiguous()
        self.rows, self.cols = rows, cols
        self._scores = items.new_empty(rows * cols)
        self._signs = items.new_empty(rows * cols)

    def scores(self, r: slice, c: slice) -> Tensor:
        out = self._scores[: (r.stop - r.start) * (c.stop - c.start)]
        out = out.view(r.stop - r.start, c.stop - c.start)
        return torch.mm(self.items[r], self.captions_t[:, c], out=out)

    def above_and_equal(self, scores: Tensor, threshold: Tensor, dim: int) -> tuple[Tensor, Tensor]:
        """Per line of ``scores`` along ``dim`` (1: rows, 0: columns): how many scores exceed
        the line's ``threshold``, how many equal it."""
        signs = self._signs[: scores.numel()].view_as(scores)
        torch.sub(scores, threshold.unsqueeze(dim), out=signs).sign_()
        difference = signs.sum(dim)  # above - below
        unequal = signs.abs_().sum(dim)  # above + below
        above = ((difference + unequal) / 2).round().long()
        return above, scores.shape[dim] - unequal.round().long()

    def count(
        self, scores: Tensor, threshold: Tensor, dim: int, above: Tensor, equal: Tensor
    ) -> None:
        """Add to ``above``/``equal`` the counts of each line of ``scores`` along ``dim``,
        visiting only the lines whose maximum reaches the threshold (every other line adds zero
        to both): on a trained model most lines of most tiles are below their query's
        positive. With most lines active the whole tile is counted, without a gather."""
        active = torch.nonzero(scores.amax(dim) >= threshold).squeeze(1)
        if 2 * len(active) > len(threshold):
            counts = self.above_and_equal(scores, threshold, dim)
            above.add_(counts[0])
            equal.add_(counts[1])
        elif len(active):
            lines = scores.index_select(1 - dim, active)
            counts = self.above_and_equal(lines, threshold[active], dim)
            above.index_add_(0, active, counts[0])
            equal.index_add_(0, active, counts[1])


def retrieval_ranks(
    items: Tensor,
    captions: Tensor,
    caption_item: Tensor,
    max_rows: int = 1024,
    max_elements: int = 1 << 20,
) -> RetrievalRanks:
    """Ranks of ``items`` [Ni, D] against ``captions`` [Nc, D] (``caption_item`` [Nc]: each
    caption's row in ``items``) by dot product, in tiles of at most ``max_rows`` rows and
    ``max_elements`` scores.

    item -> caption: 1 + the non-captions of the item scoring at least as high as its best
    caption (optimistic: 1 + the captions scoring strictly higher). caption -> item: 1 + the
    other items scoring at least as high as its own (optimistic: strictly higher).
    """
    if len(items) and int(torch.bincount(caption_item, minlength=len(items)).min()) == 0:
        raise ValueError("every item needs at least one caption (caption_item misses an item)")
    order = torch.argsort(caption_item, stable=True)  # captions grouped by item
    captions, owner = captions[order], caption_item[order]
    rows = max(1, min(max_rows, len(items), max_elements))
    cols = max(1, min(len(captions), max_elements // rows))
    tiles = _Tiles(items, captions, rows, cols)
    own = _own_scores(tiles, owner, len(items))
    best = torch.full((len(items),), -torch.inf, dtype=own.dtype, device=own.device)
    best = best.scatter_reduce(0, owner, own, reduce="amax")
    tied = torch.zeros(len(items), dtype=torch.long, device=own.device)
    tied = tied.scatter_add(0, owner, (own >= best[owner]).long())
    item_above, item_equal = (owner.new_zeros(len(items)) for _ in range(2))
    caption_above, caption_equal = (owner.new_zeros(len(captions)) for _ in range(2))
    for r in _spans(len(items), rows):
        for c in _spans(len(captions), cols):
            scores = tiles.scores(r, c)
            tiles.count(scores, best[r], 1, item_above[r], item_equal[r])
            tiles.count(scores, own[c], 0, caption_above[c], caption_equal[c])
    unsorted = torch.empty_like(order)
    unsorted[order] = torch.arange(len(order), device=order.device)
    return RetrievalRanks(
        item=1 + item_above + item_equal - tied,
        item_optimistic=1 + item_above,
        caption=(caption_above + caption_equal)[unsorted],  # own item is among the equal
        caption_optimistic=(1 + caption_above)[unsorted],
    )


def _own_scores(tiles: _Tiles, owner: Tensor, num_items: int) -> Tensor:
    """Each caption's score with its own item, read from the tiles that hold the positives
    (``owner`` sorted, so item rows ``r`` own one contiguous run of captions)."""
    own = tiles.items.new_empty(len(owner))
    starts = torch.arange(0, num_items + tiles.rows, tiles.rows, device=owner.device)
    bounds = torch.searchsorted(owner, starts).tolist()
    for r in _spans(num_items, tiles.rows):
        first, last = bounds[r.start // tiles.rows], bounds[r.start // tiles.rows + 1]
        for c in _spans(len(owner), tiles.cols):
            lo, hi = max(first, c.start), min(last, c.stop)
            if lo >= hi:
                continue
            scores = tiles.scores(r, c)
            columns = torch.arange(lo - c.start, hi - c.start, device=owner.device)
            own[lo:hi] = scores[owner[lo:hi] - r.start, columns]
    return own
