"""Chunked InfoNCE: float32 stability at the largest logit scale, tiling, argument checks (value
and gradients against a slow reference for several tile sizes, and DDP, are in the conformance
kit: tests/conformance/cases_chunked.py and cases_contrastive.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from modules.losses import chunked
from modules.losses.chunked import _tiles, chunked_soft_cross_entropy
from modules.losses.contrastive import clip_loss


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


def test_the_automatic_choice_is_the_full_matrix_up_to_its_limit_then_tiles():
    assert chunked.choose_block_elements(2048, 2048) == 0
    assert chunked.choose_block_elements(2049, 2049) == chunked.DEFAULT_BLOCK_ELEMENTS
    # a DDP rank's layout: two passes, so tiles only once a matrix outgrows memory bandwidth
    assert chunked.choose_block_elements(4096, 8192, processes=2) == 0
    assert chunked.choose_block_elements(16384, 32768, processes=2) > 0


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_clip_loss_takes_the_fused_tiles_above_the_limit_with_the_full_matrix_value(
    monkeypatch, eps
):
    """With the limit lowered to 20 logits, a batch of 9 goes through the one-pass tiles (6
    logits each); value and gradients equal the full matrix's to float64 rounding."""
    a, b, scale = leaves(9, 9, seed=2)
    ids = torch.tensor([0, 1, 1, 2, 3, 3, 3, 4, 5])
    full = clip_loss(a, b, scale, ids, eps, block_elements=0)
    want = (full, *torch.autograd.grad(full, (a, b, scale)))
    passes = []
    fused = chunked._TiledTwoWayLogSumExp.apply
    monkeypatch.setattr(chunked, "PLAIN_MAX_LOGITS", 20)
    monkeypatch.setattr(chunked, "DEFAULT_BLOCK_ELEMENTS", 6)
    monkeypatch.setattr(
        chunked._TiledTwoWayLogSumExp, "apply", lambda *args: passes.append(args[3]) or fused(*args)
    )
    tiled = clip_loss(a, b, scale, ids, eps)
    got = (tiled, *torch.autograd.grad(tiled, (a, b, scale)))
    assert passes == [6]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12)


def unit_pairs(batch: int, dim: int, seed: int, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """Normalised embeddings whose pairs agree (cosine ~0.8), so the loss is small beside its
    log-sum-exps (~scale): the regime where summing lse and pair terms separately cancels."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    b = a + 0.7 * torch.randn(batch, dim, generator=g, dtype=torch.float64)
    return F.normalize(a, dim=1).to(dtype), F.normalize(b, dim=1).to(dtype)


def symmetric(a: Tensor, b: Tensor, scale, block: int = 4096) -> Tensor:
    return chunked.chunked_symmetric_cross_entropy(a, b, scale, torch.arange(len(a)), 0.0, block)


def test_float32_large_logits_do_not_cancel_across_rows():
    a, b = unit_pairs(8192, 32, seed=3)
    want = symmetric(a.double(), b.double(), 100.0)
    got = symmetric(a, b, 100.0)
    assert abs(float(got) - float(want)) < 2e-5 * max(1.0, float(want))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_give_a_finite_float32_exact_loss(dtype):
    a, b = unit_pairs(2048, 16, seed=4, dtype=dtype)  # sum of lse ~2e5: past fp16's 65504
    a, b = a.requires_grad_(), b.requires_grad_()
    got = symmetric(a, b, 100.0)
    got.backward()
    exact = [x.detach().double().requires_grad_() for x in (a, b)]
    want = symmetric(*exact, 100.0)
    want.backward()
    assert got.dtype == torch.float32 and torch.isfinite(got)
    assert abs(float(got.detach()) - float(want.detach())) < 1e-4 * max(1.0, float(want.detach()))
    for x, reference in zip((a, b), exact, strict=True):
        assert x.grad.dtype == dtype
        torch.testing.assert_close(x.grad.double(), reference.grad, rtol=0.02, atol=1e-6)


def test_autocast_leaves_the_tiles_in_the_inputs_precision():
    """Under autocast the forward tiles and the backward's recomputed tiles must be the same
    numbers: the loss and its gradients equal those without autocast."""
    a, b = (x.requires_grad_() for x in unit_pairs(256, 16, seed=5))
    plain = symmetric(a, b, 50.0, block=1000)
    plain_grads = torch.autograd.grad(plain, (a, b))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = symmetric(a, b, 50.0, block=1000)
    mixed_grads = torch.autograd.grad(mixed, (a, b))
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain, rtol=0, atol=0)
    for got, want in zip(mixed_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("world", ["fused", "one direction"])
def test_a_scale_parameter_of_shape_one_gives_a_scalar_loss_and_its_gradient(world):
    a, b, _ = leaves(6, 6)
    scale = torch.tensor([3.0], dtype=torch.float64, requires_grad=True)
    ids = torch.arange(6)
    if world == "fused":
        loss = chunked.chunked_symmetric_cross_entropy(a, b, scale, ids, 0.1, 10)
    else:
        loss = chunked_soft_cross_entropy(a, b, scale, ids, ids, 0.1, 10)
    loss.backward()
    assert loss.shape == () and scale.grad.shape == (1,)


def test_a_strided_view_gives_the_loss_of_its_contiguous_copy():
    """One caption of each item (``text[:, k]``) is a strided view: the per-row dots read it
    in place (einsum, not a flattened dot), with the loss of a contiguous copy."""
    a, _, scale = leaves(8, 8)
    texts = torch.randn(8, 3, 5, dtype=torch.float64)
    view = texts[:, 1]
    assert not view.is_contiguous()
    ids = torch.arange(8)
    got = chunked.chunked_symmetric_cross_entropy(a, view, scale, ids, 0.0, 10)
    want = chunked.chunked_symmetric_cross_entropy(a, view.contiguous(), scale, ids, 0.0, 10)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
