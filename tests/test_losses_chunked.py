"""Chunked InfoNCE: float32 stability at the largest logit scale, tiling, argument checks (value
and gradients against a slow reference for several tile sizes, and DDP, are in the conformance
kit: tests/conformance/cases_chunked.py and cases_contrastive.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modules.losses.chunked import _tiles, chunked_soft_cross_entropy


def leaves(rows: int, cols: int, dim: int = 5, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(rows, dim, generator=g, dtype=dtype).requires_grad_()
    b = torch.randn(cols, dim, generator=g, dtype=dtype).requires_grad_()
    scale = torch.tensor(3.0, dtype=dtype).requires_grad_()
    return a, b, scale


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
