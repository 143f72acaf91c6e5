"""Chunked InfoNCE: value and gradients equal the full-matrix loss for every tile size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modules.losses.chunked import _tiles, chunked_soft_cross_entropy
from modules.losses.contrastive import (
    clip_loss,
    multi_positive_targets,
    soft_target_cross_entropy,
)

ROW_IDS = torch.tensor([0, 1, 1, 2, 9, 3, 4])  # id 9 has no positive column
COL_IDS = torch.tensor([0, 1, 1, 2, 2, 3, 4, 5, 6, 7, 8])


def leaves(rows: int, cols: int, dim: int = 5, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(rows, dim, generator=g, dtype=dtype).requires_grad_()
    b = torch.randn(cols, dim, generator=g, dtype=dtype).requires_grad_()
    scale = torch.tensor(3.0, dtype=dtype).requires_grad_()
    return a, b, scale


def value_and_grads(loss_fn, *inputs):
    loss = loss_fn(*inputs)
    return (loss.detach(), *torch.autograd.grad(loss, inputs))


@pytest.mark.parametrize("block_elements", [1, 5, 12, 77, 10_000])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_matches_the_full_matrix_loss(block_elements, smoothing):
    a, b, scale = leaves(len(ROW_IDS), len(COL_IDS))

    def full(a, b, scale):
        targets = multi_positive_targets(ROW_IDS, COL_IDS, smoothing, dtype=a.dtype)
        return soft_target_cross_entropy(scale * a @ b.T, targets)

    def chunked(a, b, scale):
        return chunked_soft_cross_entropy(a, b, scale, ROW_IDS, COL_IDS, smoothing, block_elements)

    want_all, got_all = value_and_grads(full, a, b, scale), value_and_grads(chunked, a, b, scale)
    for want, got in zip(want_all, got_all, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("ids", [None, torch.tensor([4, 1, 1, 2, 4, 0])])
def test_clip_loss_with_blocks_equals_clip_loss(ids):
    a, b, scale = leaves(6, 6)

    def loss(block_elements):
        def fn(a, b, scale):
            image, text = F.normalize(a, dim=1), F.normalize(b, dim=1)
            return clip_loss(image, text, scale, ids=ids, label_smoothing=0.05, **block_elements)

        return value_and_grads(fn, a, b, scale)

    for want, got in zip(loss({}), loss({"block_elements": 4}), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_large_logits_stay_finite_in_float32():
    a, b, _ = leaves(64, 64, dim=16, seed=1, dtype=torch.float32)
    a, b = F.normalize(a.detach(), dim=1), F.normalize(b.detach(), dim=1)
    ids = torch.arange(64)
    scale = torch.tensor(100.0)  # the largest CLIP logit scale: logits up to +-100
    got = chunked_soft_cross_entropy(a, b, scale, ids, ids, 0.0, block_elements=100)
    want = F.cross_entropy(scale * a @ b.T, ids)
    assert torch.isfinite(got)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("rows", "cols", "block"), [(7, 11, 5), (100, 3, 10), (1, 50, 7)])
def test_tiles_cover_every_logit_once_within_the_bound(rows, cols, block):
    seen = torch.zeros(rows, cols, dtype=torch.long)
    for r, c in _tiles(rows, cols, block):
        seen[r, c] += 1
        assert (r.stop - r.start) * (c.stop - c.start) <= block
    assert (seen == 1).all()


def test_rejects_a_non_positive_block():
    a, b, scale = leaves(2, 2)
    with pytest.raises(ValueError, match="block_elements"):
        chunked_soft_cross_entropy(a, b, scale, torch.arange(2), torch.arange(2), 0.0, 0)
