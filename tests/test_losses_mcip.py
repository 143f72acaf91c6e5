"""MCIP's caption retrieval and multi-caption text ArcFace (modules/losses/mcip.py): limits and
invariances (the slow reference, gradcheck and 2 processes are in
tests/conformance/cases_mcip.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from modules.losses.mcip import multi_caption_arcface_loss, retrieve_captions
from modules.losses.metric_learning import margin_softmax_loss


def data(seed: int = 0, rows: int = 6, k: int = 3, dim: int = 5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, dim, generator=g, dtype=torch.float64)
    captions = torch.randn(rows, k, dim, generator=g, dtype=torch.float64)
    keep = torch.rand(rows, k, generator=g) < 0.7
    keep[:, 0] = True
    return x, captions, keep


def test_one_caption_each_without_the_max_term_is_arcface_with_captions_as_classes():
    x, captions, _ = data()
    keep = torch.zeros(captions.shape[:2], dtype=torch.bool)
    keep[:, 0] = True
    got = multi_caption_arcface_loss(x, captions, keep, 30.0, 0.1, max_negative_weight=0.0)
    want = margin_softmax_loss(x, captions[:, 0], torch.arange(len(x)), 30.0, 0.1)
    torch.testing.assert_close(got, want)


def test_zero_margin_is_a_soft_target_cross_entropy_plus_the_max_term():
    x, captions, keep = data(seed=1)
    texts = F.normalize(captions[keep], dim=-1)
    owner = torch.arange(len(x))[:, None].expand_as(keep)[keep]
    target = (owner[None, :] == torch.arange(len(x))[:, None]).double()
    target = target / target.sum(1, keepdim=True)
    log_p = F.log_softmax(20.0 * F.normalize(x, dim=-1) @ texts.T, dim=-1)
    soft = -(target * log_p).sum(1)
    hardest = (-(1 - target) * log_p).max(1).values
    got = multi_caption_arcface_loss(x, captions, keep, 20.0, 0.0, 0.25)
    torch.testing.assert_close(got, (soft + 0.25 * hardest).mean())


def test_invariant_to_row_order_norms_and_padding_content():
    x, captions, keep = data(seed=2)
    base = multi_caption_arcface_loss(x, captions, keep)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        multi_caption_arcface_loss(x[perm], captions[perm], keep[perm]), base
    )
    torch.testing.assert_close(multi_caption_arcface_loss(3.0 * x, 0.5 * captions, keep), base)
    padded = captions.clone()
    padded[~keep] = 1e3  # padding is never read
    torch.testing.assert_close(multi_caption_arcface_loss(x, padded, keep), base)


def test_an_image_without_captions_gets_only_the_max_term_and_none_at_all_gives_zero():
    x, captions, keep = data(seed=3)
    keep[2] = False  # MCIP: target row 0 (nan_to_num), no margin, the max term still applies
    others = torch.tensor([i for i in range(len(x)) if i != 2])
    n = len(x)
    for w in (0.0, 0.1):
        whole = n * multi_caption_arcface_loss(x, captions, keep, 30.0, 0.1, w)
        rest = (n - 1) * multi_caption_arcface_loss(
            x[others], captions[others], keep[others], 30.0, 0.1, w
        )
        log_p = F.log_softmax(
            30.0 * F.normalize(x[2], dim=-1) @ F.normalize(captions[keep], dim=-1).T, dim=-1
        )
        torch.testing.assert_close(whole - rest, w * (-log_p).max())
    x = x.requires_grad_()
    nothing = multi_caption_arcface_loss(x, captions, torch.zeros_like(keep))
    nothing.backward()
    assert nothing.item() == 0.0 and not x.grad.any()


def test_retrieval_is_the_top_k_by_cosine_kept_above_the_threshold():
    g = torch.Generator().manual_seed(4)
    images, pool = torch.randn(7, 6, generator=g), torch.randn(30, 6, generator=g)
    indices, keep = retrieve_captions(images, 5.0 * pool, k=4, threshold=0.3)
    sims = F.normalize(images, dim=-1) @ F.normalize(pool, dim=-1).T
    for i in range(len(images)):
        order = sorted(range(len(pool)), key=lambda j: -float(sims[i, j]))[:4]
        assert indices[i].tolist() == order
        assert keep[i].tolist() == [float(sims[i, j]) > 0.3 for j in order]
    few, _ = retrieve_captions(images, pool[:2], k=20)
    assert few.shape == (7, 2)
