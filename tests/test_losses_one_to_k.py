"""1-to-K contrastive loss (CCRK): its invariances and CLIP limit (the slow reference, gradients
and DDP are in the conformance kit: tests/conformance/cases_one_to_k.py); Mean Rank Variance by
hand and through the per-language metric."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from callbacks.metrics import RetrievalWithRanks, mean_rank_variance
from modules.losses.contrastive import clip_loss
from modules.losses.one_to_k import one_to_k_loss
from modules.one_to_k import OneToKConfig

TOL = dict(rtol=0.0, atol=1e-12)


def _features(batch: int, k: int, dim: int = 5, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(batch, dim, generator=g, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(batch, k, dim, generator=g, dtype=torch.float64), dim=-1)
    return image, text


def test_k1_is_clip_loss_exactly():
    image, text = _features(6, 1)
    ids = torch.tensor([3, 1, 3, 0, 2, 1])
    for kwargs in ({}, {"ids": ids}):
        assert torch.allclose(
            one_to_k_loss(image, text, 7.0, **kwargs),
            clip_loss(image, text[:, 0], 7.0, **kwargs),
            **TOL,
        )


def test_distinct_ids_equal_no_ids_and_repeated_images_share_positives():
    image, text = _features(5, 3)
    plain = one_to_k_loss(image, text, 4.0)
    assert torch.allclose(
        one_to_k_loss(image, text, 4.0, ids=torch.tensor([9, 2, 4, 0, 7])), plain, **TOL
    )
    # item 0 twice (another view, other captions): with ids the copy's captions are positives
    view, captions = _features(1, 3, seed=1)
    image2, text2 = torch.cat([image, view]), torch.cat([text, captions])
    shared = one_to_k_loss(image2, text2, 4.0, ids=torch.tensor([0, 1, 2, 3, 4, 0]))
    assert not torch.allclose(shared, one_to_k_loss(image2, text2, 4.0), atol=1e-6)


def test_permuting_each_images_captions_leaves_the_loss_unchanged():
    image, text = _features(5, 4)
    g = torch.Generator().manual_seed(1)
    permuted = torch.stack([t[torch.randperm(4, generator=g)] for t in text])
    assert not torch.equal(permuted, text)
    for ids in (None, torch.tensor([0, 1, 0, 2, 3])):
        assert torch.allclose(
            one_to_k_loss(image, permuted, 3.0, ids=ids),
            one_to_k_loss(image, text, 3.0, ids=ids),
            **TOL,
        )


def test_equal_similarity_captions_get_equal_gradients():
    image, text = _features(4, 3)
    text[1] = text[1, :1].expand(3, -1)  # image 1's three captions: one point, equal similarity
    text = text.clone().requires_grad_()
    (grad,) = torch.autograd.grad(one_to_k_loss(image, text, 6.0), text)
    assert torch.allclose(grad[1, 0], grad[1, 1], **TOL) and torch.allclose(
        grad[1, 0], grad[1, 2], **TOL
    )
    assert not torch.allclose(grad[0, 0], grad[0, 1], atol=1e-6)  # distinct captions differ


def test_perfect_alignment_limit_is_half_log_k():
    """All K captions at their image: image->text can at best split the softmax over its K
    positives (K log K per row with the sum target), text->image reaches 0, so L -> log(K)/2.
    A target divided by K would give log(K) / (2K) instead."""
    image, _ = _features(6, 1, dim=8)
    image = F.normalize(image + 3 * torch.eye(6, 8, dtype=torch.float64), dim=-1)  # spread out
    for k in (1, 2, 4):
        text = image[:, None].expand(-1, k, -1)
        loss = one_to_k_loss(image, text, 1e4)
        assert loss.item() == pytest.approx(math.log(k) / 2, abs=1e-9)


# ------------------------------------------------------------------ MRV and per-language ranks


def test_mrv_is_zero_when_every_language_ranks_alike_and_matches_numpy():
    same = torch.tensor([[1, 4, 2, 9]] * 3)
    assert mean_rank_variance(same, "std") == 0 and mean_rank_variance(same, "var") == 0
    ranks = torch.tensor([[1, 2], [3, 2], [2, 5]])  # K = 3 languages, 2 instances
    # by hand: instance 0 ranks (1, 3, 2): var 2/3; instance 1 (2, 2, 5): var 2
    assert mean_rank_variance(ranks, "var").item() == pytest.approx((2 / 3 + 2) / 2)
    assert mean_rank_variance(ranks, "std").item() == pytest.approx(
        (math.sqrt(2 / 3) + math.sqrt(2)) / 2
    )
    assert mean_rank_variance(ranks).item() == pytest.approx(np.std(ranks.numpy(), axis=0).mean())
    with pytest.raises(ValueError, match="kind"):
        mean_rank_variance(ranks, "mad")
    with pytest.raises(ValueError, match="mrv_kind"):
        OneToKConfig(mrv_kind="mad")


def test_retrieval_with_ranks_gives_each_querys_rank_in_id_order():
    """3 images, 2 captions each; caption ranks by hand from the similarity matrix."""
    image = torch.eye(3, dtype=torch.float64)
    caption = torch.tensor(
        [[1, 0, 0], [0, 0.1, 0.9], [0, 1, 0], [0.6, 0.8, 0], [0, 0, 0.5], [0, 0.8, 0.6]],
        dtype=torch.float64,
    )
    item_id = torch.tensor([0, 0, 1, 1, 2, 2])
    metric = RetrievalWithRanks(ks=(1,))
    order = torch.tensor([5, 2, 0, 4, 1, 3])  # update order does not matter
    metric.update(image[item_id[order]], caption[order], item_id[order], order)
    result = metric.compute()
    # caption -> image, 1 + other images scoring >= its own: c1 (own 0; 0.1, 0.9) 3,
    # c5 (own 0.6; image 1 0.8) 2, the others 1
    assert result["ranks/caption"].tolist() == [1, 3, 1, 1, 1, 2]
    # image -> caption, by its best caption: image 2's best is c5 (0.6) behind c1 (0.9)
    assert result["ranks/item"].tolist() == [1, 1, 2]
    assert result["text_to_image/R1"].item() == pytest.approx(100 * 4 / 6)
    assert result["image_to_text/R1"].item() == pytest.approx(100 * 2 / 3)
