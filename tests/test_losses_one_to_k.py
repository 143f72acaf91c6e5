"""1-to-K contrastive loss (CCRK) against a slow per-element reference, its invariances, its
CLIP limit and DDP exactness; Mean Rank Variance by hand and through the per-language metric."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from modules.losses.contrastive import clip_loss
from modules.losses.one_to_k import one_to_k_loss
from modules.one_to_k import OneToKConfig, RetrievalWithRanks, mean_rank_variance
from tests.processes import spawn_and_wait

TOL = dict(rtol=0.0, atol=1e-12)


def _features(batch: int, k: int, dim: int = 5, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(batch, dim, generator=g, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(batch, k, dim, generator=g, dtype=torch.float64), dim=-1)
    return image, text


def _slow_reference(image: torch.Tensor, text: torch.Tensor, scale: float) -> float:
    """The spec's formulas element by element in plain Python:
    L_i2t = -(1/B) sum_i sum_k log softmax over all (j, l) of S_i at (i, k),
    L_t2i = -(1/KB) sum_(i,k) log softmax over j of S_(i,k) at i, L = (L_i2t + L_t2i) / 2K."""
    b, k, _ = text.shape
    s = [
        [[scale * float(image[i] @ text[j, l]) for l in range(k)] for j in range(b)]
        for i in range(b)
    ]
    l_i2t = 0.0
    for i in range(b):
        log_z = math.log(sum(math.exp(s[i][j][l]) for j in range(b) for l in range(k)))
        l_i2t -= sum(s[i][i][l] - log_z for l in range(k))
    l_t2i = 0.0
    for i in range(b):
        for l in range(k):
            log_z = math.log(sum(math.exp(s[j][i][l]) for j in range(b)))
            l_t2i -= s[i][i][l] - log_z
    return (l_i2t / b + l_t2i / (k * b)) / (2 * k)


def test_k1_is_clip_loss_exactly():
    image, text = _features(6, 1)
    ids = torch.tensor([3, 1, 3, 0, 2, 1])
    for kwargs in ({}, {"ids": ids}):
        assert torch.allclose(
            one_to_k_loss(image, text, 7.0, **kwargs),
            clip_loss(image, text[:, 0], 7.0, **kwargs),
            **TOL,
        )


def test_matches_slow_reference_values_and_gradients():
    image, text = _features(4, 3)
    scale = torch.tensor(5.0, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (image, text, scale)]
    loss = one_to_k_loss(leaves[0], leaves[1], leaves[2])
    assert loss.item() == pytest.approx(_slow_reference(image, text, 5.0), abs=1e-12)
    grads = torch.autograd.grad(loss, leaves)
    eps = 1e-6  # central differences of the reference
    for leaf, grad in zip((image, text), grads[:2], strict=True):
        for index in [(0, 1), (2, 4), (3, 0)] if leaf.ndim == 2 else [(0, 2, 1), (3, 1, 4)]:
            plus, minus = leaf.clone(), leaf.clone()
            plus[index] += eps
            minus[index] -= eps
            args = (plus, text) if leaf is image else (image, plus)
            args_m = (minus, text) if leaf is image else (image, minus)
            numeric = (_slow_reference(*args, 5.0) - _slow_reference(*args_m, 5.0)) / (2 * eps)
            assert grad[index].item() == pytest.approx(numeric, abs=1e-7)
    numeric = _slow_reference(image, text, 5.0 + eps) - _slow_reference(image, text, 5.0 - eps)
    assert grads[2].item() == pytest.approx(numeric / (2 * eps), abs=1e-7)


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


# ------------------------------------------------------------------ DDP

WORLD, N, K = 2, 6, 3


def _ddp_case(rows: slice) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x_image = torch.randn(N, 4, generator=g, dtype=torch.float64)[rows].clone().requires_grad_()
    x_text = torch.randn(N, K, 4, generator=g, dtype=torch.float64)[rows].clone().requires_grad_()
    weight = torch.randn(4, 5, generator=g, dtype=torch.float64).requires_grad_()
    log_scale = torch.tensor(math.log(4.0), dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([5, 1, 1, 2, 5, 3])[rows]  # id 5 on both ranks
    image, text = F.normalize(x_image @ weight, dim=-1), F.normalize(x_text @ weight, dim=-1)
    out = {}
    for name, case_ids in (("plain", None), ("ids", ids)):
        loss = one_to_k_loss(image, text, log_scale.exp(), ids=case_ids)
        grads = torch.autograd.grad(loss, [x_image, x_text, weight, log_scale], retain_graph=True)
        out[name] = [loss.detach(), *grads]
    return out


def _ddp_worker(rank: int, store_path: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", store=dist.FileStore(store_path, WORLD), rank=rank, world_size=WORLD
    )
    b = N // WORLD
    torch.save(_ddp_case(slice(rank * b, (rank + 1) * b)), f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_ranks_match_one_process(tmp_path):
    """Averaged rank losses and parameter gradients equal the single-process ones; a rank's
    input gradient is 1/world of the single-process one (DDP then averages)."""
    spawn_and_wait(_ddp_worker, (str(tmp_path / "store"), str(tmp_path)), WORLD)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    whole = _ddp_case(slice(None))
    b = N // WORLD
    for name in ("plain", "ids"):
        loss, g_image, g_text, g_weight, g_scale = whole[name]
        per_rank = [r[name] for r in ranks]
        assert torch.allclose(sum(r[0] for r in per_rank) / WORLD, loss, **TOL)
        assert torch.allclose(sum(r[3] for r in per_rank) / WORLD, g_weight, atol=1e-10)
        assert torch.allclose(sum(r[4] for r in per_rank) / WORLD, g_scale, atol=1e-10)
        for r, result in enumerate(per_rank):
            rows = slice(r * b, (r + 1) * b)
            assert torch.allclose(result[1] / WORLD, g_image[rows], atol=1e-10)
            assert torch.allclose(result[2] / WORLD, g_text[rows], atol=1e-10)


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
