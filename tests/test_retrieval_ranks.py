"""Tiled ranks of both directions (callbacks/retrieval_ranks.py) against ranks counted one
score at a time, for every tile shape from 1 x 1 to the whole matrix, with exact ties.

Embeddings are small integers, so every dot product is exact in float32 whatever the tile: the
reference and the tiles see the same scores, and the ties are real ones (duplicate captions,
duplicate items, a caption as close to another item as to its own)."""

from __future__ import annotations

import pytest
import torch

from callbacks.retrieval_ranks import retrieval_ranks


def integer_embeddings(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """12 items (two of them identical), 1-3 captions each in shuffled order, several captions
    identical across items; entries in {-2, ..., 2}."""
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(-2, 3, (12, 6), generator=g).float()
    items[7] = items[3]  # two identical items
    counts = torch.randint(1, 4, (12,), generator=g)
    caption_item = torch.repeat_interleave(torch.arange(12), counts)
    noise = torch.randint(-1, 2, (len(caption_item), 6), generator=g)
    captions = (items[caption_item] + noise).clamp(-2, 2)
    captions[5] = captions[0]  # identical captions of (usually) different items
    captions[-1] = captions[2]
    order = torch.randperm(len(caption_item), generator=g)
    return items, captions[order], caption_item[order]


def reference_ranks(items, captions, caption_item) -> dict[str, list[int]]:
    """One score at a time: item -> caption against its best caption, caption -> item against
    its own item; pessimistic counts the negatives >= the positive, optimistic those >."""
    scores = [[float(i @ c) for c in captions] for i in items]
    out: dict[str, list[int]] = {k: [] for k in ("item", "item_opt", "caption", "caption_opt")}
    for i, row in enumerate(scores):
        own = [j for j in range(len(captions)) if caption_item[j] == i]
        best = max(row[j] for j in own)
        out["item"].append(1 + sum(row[j] >= best for j in range(len(row)) if j not in own))
        out["item_opt"].append(1 + sum(v > best for v in row))
    for j in range(len(captions)):
        own = scores[int(caption_item[j])][j]
        column = [scores[i][j] for i in range(len(items)) if i != int(caption_item[j])]
        out["caption"].append(1 + sum(v >= own for v in column))
        out["caption_opt"].append(1 + sum(v > own for v in column))
    return out


@pytest.mark.parametrize(
    ("max_rows", "max_elements"), [(1, 1), (3, 15), (5, 7), (4, 1000), (1024, 1 << 20)]
)
@pytest.mark.parametrize("seed", [0, 1])
def test_tiled_ranks_equal_ranks_counted_one_score_at_a_time(seed, max_rows, max_elements):
    items, captions, caption_item = integer_embeddings(seed)
    want = reference_ranks(items, captions, caption_item)
    got = retrieval_ranks(items, captions, caption_item, max_rows, max_elements)
    assert got.item.tolist() == want["item"]
    assert got.item_optimistic.tolist() == want["item_opt"]
    assert got.caption.tolist() == want["caption"]
    assert got.caption_optimistic.tolist() == want["caption_opt"]
    assert got.item.tolist() != got.item_optimistic.tolist()  # the ties are real


def test_a_tile_whose_lines_are_all_below_their_thresholds_adds_nothing():
    # perfect retrieval: each tile off the diagonal has every line below its threshold
    items = torch.eye(8) * 3
    got = retrieval_ranks(items, items.clone(), torch.arange(8), max_rows=2, max_elements=4)
    assert got.item.tolist() == got.caption.tolist() == [1] * 8
    assert got.item_optimistic.tolist() == got.caption_optimistic.tolist() == [1] * 8


def test_an_item_without_a_caption_is_refused_not_ranked_last():
    items = torch.eye(3)
    with pytest.raises(ValueError, match="at least one caption"):
        retrieval_ranks(items, items[:2].clone(), torch.tensor([0, 0]))
