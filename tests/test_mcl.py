"""MCL: k-means, joint pseudo-labels, cluster-homogeneous batches, and the stage wiring."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datamodules.samplers import GroupBatches, RankSlices
from modules.clustering import joint_labels, kmeans
from modules.losses.contrastive import clip_loss


def blobs(
    centres: int = 4, per: int = 20, dim: int = 3, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(centres, dim, generator=g, dtype=torch.float64) * 10
    truth = torch.arange(centres).repeat_interleave(per)
    return means[truth] + 0.1 * torch.randn(
        len(truth), dim, generator=g, dtype=torch.float64
    ), truth


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    return all(
        (a[i] == a[j]) == (b[i] == b[j]) for i, j in itertools.combinations(range(len(a)), 2)
    )


def test_kmeans_recovers_separated_blobs_and_is_seeded():
    x, truth = blobs()
    labels, centres = kmeans(x, 4, seed=0)
    assert same_partition(labels, truth)
    # every point is assigned to its nearest centre (a brute-force check of the fixed point)
    for i in range(len(x)):
        assert labels[i] == min(range(4), key=lambda c: float((x[i] - centres[c]).pow(2).sum()))
    assert torch.equal(kmeans(x, 4, seed=0)[0], labels)
    with pytest.raises(ValueError, match="k must be in"):
        kmeans(x, len(x) + 1)


def test_joint_label_is_the_mixed_radix_number():
    assert joint_labels([torch.tensor([3]), torch.tensor([7])], 10).item() == 37
    stage = [torch.tensor([0, 1, 2, 1]), torch.tensor([2, 2, 0, 1]), torch.tensor([1, 0, 0, 1])]
    want = [a * 9 + b * 3 + c for a, b, c in zip(*(s.tolist() for s in stage), strict=True)]
    assert joint_labels(stage, 3).tolist() == want


def test_every_batch_holds_one_group_and_remainders_are_dropped():
    groups = np.array([0] * 10 + [1] * 7 + [2] * 3)
    sampler = GroupBatches(groups, batch_size=3, seed=0)
    assert len(sampler) == 3 + 2 + 1
    epoch = list(sampler)
    assert len(epoch) == len(sampler)
    for batch in epoch:
        assert len(batch) == 3 and len(set(groups[batch])) == 1
    assert len({i for b in epoch for i in b}) == 18  # no sample twice in an epoch
    assert list(sampler) != epoch  # reshuffled each epoch
    assert list(GroupBatches(groups, 3, seed=0)) == epoch  # deterministic from the seed
    # groups in turn, as the official sampler: 0, 1, 2, then 0, 1 (2 has run out), then 0
    assert [int(groups[b[0]]) for b in epoch] == [0, 1, 2, 0, 1, 0]
    with pytest.raises(ValueError, match="no group has batch_size 11"):
        GroupBatches(groups, batch_size=11, seed=0)


def test_group_batches_shard_over_ranks_as_global_batches():
    groups = np.repeat(np.arange(3), 8)
    whole = list(RankSlices(GroupBatches(groups, 4, seed=1), 0, 1))
    ranks = [list(RankSlices(GroupBatches(groups, 4, seed=1), r, 2)) for r in range(2)]
    assert [a + b for a, b in zip(*ranks, strict=True)] == whole


def test_loss_on_a_one_cluster_batch_is_the_plain_nce():
    """MCL changes the batches, not the loss: on a batch from one cluster it is CLIP's value.
    (Masking other-cluster negatives inside a mixed batch would give a different value.)"""
    g = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=1)
    text = F.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=1)
    logits = 10.0 * image @ text.T
    want = 0.5 * (
        F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.T, torch.arange(6))
    )
    assert clip_loss(image, text, 10.0).item() == pytest.approx(want.item(), abs=1e-12)


def test_mcl_draws_training_batches_within_the_earlier_stages_joint_clusters(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path))
    from datamodules import ImageTextDataConfig, ImageTextDataModule
    from experiments.stages import fit_context
    from modules.mcl import MCL, train_item_embeddings
    from tests.tiny_modules import setup_with_words, tiny_module

    cfg = ImageTextDataConfig(
        num_train=48, num_val=8, num_test=8, image_size=24, max_text_len=8, batch_size=4
    )
    dm = ImageTextDataModule(cfg)
    dm.prepare_data()
    setup_with_words(dm, "fit")
    vocab = dm.tokenizer.vocab
    earlier = [tiny_module(vocab), tiny_module(vocab)]
    module = tiny_module(vocab, MCL, {"name": "mcl", "num_clusters": 2})
    module.prepare_fit(fit_context(dm, earlier))
    ctx = fit_context(dm, [])
    want = joint_labels([kmeans(train_item_embeddings(m, ctx), 2)[0] for m in earlier], 2)
    assert torch.equal(torch.as_tensor(dm._item_groups), want)
    for batch in dm.train_dataloader():
        assert len(set(want[batch["item_id"]].tolist())) == 1
    module.prepare_fit(fit_context(dm, []))  # no earlier stage: random batches again
    assert dm._item_groups is None
