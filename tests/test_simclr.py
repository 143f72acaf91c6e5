"""SimCLR (modules/simclr.py, modules/losses/simclr.py): NT-Xent against a slow loop written
from Eq. 1 of the paper, through the module too (projection head over both views, temperature,
normalisation); evaluation reads the representation before the head; the head's BatchNorm is
global. The loss's conformance cases (2 processes, gradcheck) are in
tests/conformance/cases_simclr.py."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from modules.base import AlignmentModule
from modules.losses.contrastive import clip_loss
from modules.losses.simclr import nt_xent_loss
from modules.simclr import SimCLR

F64 = torch.float64
SIZE = 16
MODEL = {
    "embed_dim": 16,
    "image": {"name": "cnn", "channels": [8, 16]},
    "temperature": 0.5,
    "learnable_temperature": False,
    "max_logit_scale": 100.0,
}
OPTIM = {
    "lr": 1e-2,
    "weight_decay": 0.1,
    "betas": [0.9, 0.98],
    "eps": 1e-6,
    "warmup_steps": 1,
    "min_lr_ratio": 0.0,
}


def slow_nt_xent(a: Tensor, b: Tensor, scale: Tensor | float) -> Tensor:
    """Eq. 1 of the paper, scalar by scalar: z_{2k-1} = a_k, z_{2k} = b_k (0-based here: 2k and
    2k + 1), l(i, j) = -log exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau), and the loss the mean
    of l(2k, 2k+1) + l(2k+1, 2k) over the 2N ordered positive pairs."""
    n, dim = a.shape
    z = [row for k in range(n) for row in (a[k], b[k])]

    def similarity(i: int, j: int) -> Tensor:
        return scale * sum(z[i][d] * z[j][d] for d in range(dim))

    def pair_loss(i: int, j: int) -> Tensor:
        denominator = sum(torch.exp(similarity(i, k)) for k in range(2 * n) if k != i)
        return -(similarity(i, j) - torch.log(denominator))

    return sum(pair_loss(2 * k, 2 * k + 1) + pair_loss(2 * k + 1, 2 * k) for k in range(n)) / (
        2 * n
    )


def unit(rows: int, dim: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=generator, dtype=F64), dim=1)


def views_module(cls: type[AlignmentModule], views: int, **method: Any) -> AlignmentModule:
    """``cls`` on one 16-d CNN image encoder with ``views`` training views, float64."""
    torch.manual_seed(0)
    return cls(
        method={"name": cls.__name__.lower(), **method},
        model=MODEL,
        optim=OPTIM,
        tokenizer=None,
        context={"modalities": ["image"], "views": {"image": views}, "image_size": SIZE},
    ).double()


def views_batch(batch: int, sizes: tuple[int, ...] = (SIZE, SIZE), seed: int = 0) -> dict:
    """Random views ``image@v`` of side ``sizes[v]`` (float64) and ``index``."""
    generator = torch.Generator().manual_seed(seed)
    return {
        **{
            f"image@{v}": torch.randn(batch, 3, side, side, generator=generator, dtype=F64)
            for v, side in enumerate(sizes)
        },
        "index": torch.arange(batch),
    }


def eval_batch(batch: int, seed: int = 1) -> dict:
    """An evaluation batch: the plain ``image`` and its labels, no views."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(batch, 3, SIZE, SIZE, generator=generator, dtype=F64),
        "index": torch.arange(batch),
        "item_id": torch.arange(batch),
        "label/shape": torch.arange(batch) % 3,
    }


def test_nt_xent_matches_the_slow_loop_and_is_not_clip():
    a, b = unit(6, 5, 0).requires_grad_(), unit(6, 5, 1).requires_grad_()
    got = nt_xent_loss(a, b, 2.0)
    want = slow_nt_xent(a, b, 2.0)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    grads = torch.autograd.grad(got, (a, b))
    for g, w in zip(grads, torch.autograd.grad(want, (a, b)), strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12)
    # the same-view negatives are what separates NT-Xent from CLIP's cross-view InfoNCE
    assert not torch.allclose(got, clip_loss(a, b, 2.0))


def test_nt_xent_leaves_the_sample_itself_out():
    """Two identical views: without the self-exclusion each row would have two logits of
    1/tau (itself and its positive) and the loss could not go below log 2."""
    far = torch.eye(8, dtype=F64)[:4]  # orthogonal items: every negative has logit 0
    assert nt_xent_loss(far, far.clone(), 50.0) < 1e-12


def test_module_loss_is_the_slow_loop_on_the_projected_views():
    module = views_module(SimCLR, 2).train()
    batch = views_batch(6)
    outputs = module.encode(batch)
    got = module.losses(batch, outputs)["nt_xent"]
    pooled = torch.cat([outputs["image@0"].pooled, outputs["image@1"].pooled])
    z = F.normalize(module.head(pooled), dim=1)  # the head's BatchNorm over both views at once
    want = slow_nt_xent(z[:6], z[6:], module.scale)  # 1 / model.temperature
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    torch.testing.assert_close(module.scale.item(), 2.0, rtol=1e-6, atol=0)


@pytest.mark.parametrize("views", [1, 3])
def test_simclr_needs_exactly_two_views(views):
    with pytest.raises(ValueError, match="exactly 2 training views"):
        views_module(SimCLR, views)


def test_evaluation_reads_the_representation_before_the_head():
    module = views_module(SimCLR, 2).eval()
    batch = eval_batch(5)
    with torch.no_grad():
        out = module.validation_step(batch, 0)
        pooled = module.towers["image"](batch).pooled
        torch.testing.assert_close(out["raw"]["image"], pooled, rtol=0, atol=0)
        torch.testing.assert_close(out["embeddings"]["image"], F.normalize(pooled, dim=1))
        for p in module.head.parameters():
            p.add_(1.0)
        torch.testing.assert_close(module.validation_step(batch, 0)["raw"], out["raw"])
