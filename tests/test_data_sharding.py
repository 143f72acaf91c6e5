"""Global batches under DDP: W ranks load the slices of exactly the batches one process loads,
and evaluation shards cover every sample once (padding repeats are dropped by the metrics)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import BatchSampler, SequentialSampler

from datamodules import ImageTextDataConfig, ImageTextDataModule
from datamodules.samplers import EvalShard, RankSlices
from tests.tiny_modules import setup_with_words

CFG = ImageTextDataConfig(num_train=48, num_val=10, num_test=10, batch_size=12)


def loaders(cfg: ImageTextDataConfig, world: int, split: str) -> list[list[dict]]:
    """Two epochs of ``split`` batches for every rank of ``world`` (one module per rank, as
    in DDP: each rank builds its own loader with the same seed)."""
    out = []
    for rank in range(world):
        torch.manual_seed(0)
        module = ImageTextDataModule(cfg)
        module.trainer = SimpleNamespace(global_rank=rank, world_size=world)
        setup_with_words(module, "fit")
        loader = module.train_dataloader() if split == "train" else module.val_dataloader()
        out.append([batch for _ in range(2) for batch in loader])
    return out


@pytest.mark.parametrize(
    "cfg", [replace(CFG, train_pairs="caption"), replace(CFG, sibling_batches=True)]
)
def test_ranks_train_on_slices_of_the_single_process_batches(cfg):
    (single,) = loaders(cfg, 1, "train")
    ranks = loaders(cfg, 3, "train")
    assert all(len(r) == len(single) for r in ranks)
    for step, whole in enumerate(single):
        parts = [r[step] for r in ranks]
        assert all(len(p["index"]) == 4 for p in parts)
        assert torch.equal(torch.cat([p["item_id"] for p in parts]), whole["item_id"])
        assert torch.equal(torch.cat([p["image"] for p in parts]), whole["image"])
        if cfg.train_pairs == "caption":  # (train_pairs: image draws each caption at random)
            assert torch.equal(torch.cat([p["index"] for p in parts]), whole["index"])
    per_epoch = len(single) // 2
    epochs = [torch.cat([b["item_id"] for b in single[i : i + per_epoch]]) for i in (0, per_epoch)]
    assert not torch.equal(epochs[0], epochs[1])  # a new order every epoch


def test_global_batch_must_divide_over_the_ranks():
    with pytest.raises(ValueError, match="batch_size 12 is the global contrastive batch"):
        RankSlices(BatchSampler(SequentialSampler(range(24)), 12, drop_last=True), 0, 5)


@pytest.mark.parametrize(("size", "world"), [(10, 1), (10, 3), (7, 4), (2, 3)])
def test_eval_shards_cover_every_sample_with_equal_counts(size, world):
    shards = [list(EvalShard(size, rank, world)) for rank in range(world)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == -(-size // world)
    flat = [i for s in shards for i in s]
    assert sorted(set(flat)) == list(range(size))
    assert len(flat) - size < world  # only the padding repeats
    assert shards[0][: len(shards[0])] == list(range(0, size, world))[: len(shards[0])]


def test_eval_loaders_split_the_batch_over_ranks():
    cfg = replace(CFG, eval_batch_size=8)
    (single,) = loaders(cfg, 1, "val")
    ranks = loaders(cfg, 2, "val")
    index = sorted(int(i) for r in ranks for b in r[: len(r) // 2] for i in b["index"])
    assert index == torch.cat([b["index"] for b in single[: len(single) // 2]]).tolist()
    assert max(len(b["index"]) for b in ranks[0]) == 4  # eval_batch_size 8 over 2 ranks
