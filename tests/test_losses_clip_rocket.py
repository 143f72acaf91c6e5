"""CLIP🚀 losses: their limits (A = 0, identity cross-correlation, Sinkhorn marginals,
stop-gradient) and argument checks, and the method: CLIP limit, evaluation embeddings, gradient
caching. The losses against slow references transcribed from the official ``losses.py``
(facebookresearch/clip-rocket), with gradients and on 2 processes, are in the conformance kit
(tests/conformance/cases_clip_rocket.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modules.clip import CLIP
from modules.clip_rocket import CLIPRocket
from modules.grad_cache import cached_backward, split_batch
from modules.losses.clip_rocket import (
    barlow_twins,
    cl2l_loss,
    negative_cosine,
    swalip_loss,
)
from modules.losses.contrastive import clip_loss
from modules.losses.sinkhorn import sinkhorn_knopp
from modules.towers.tokenizer import WordTokenizer
from tests.conformance.cases_clip_rocket import slow_sinkhorn
from tests.tiny_modules import tiny_module

F64 = torch.float64


def unit(rows: int, dim: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=g, dtype=F64), dim=1)


def gauss(rows: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ---------------------------------------------------------------- CL2L


def test_cl2l_without_views_is_twice_the_clip_loss_in_sum_mode():
    x, y = unit(6, seed=1), unit(6, seed=2)
    scale = torch.tensor(1 / 0.07, dtype=F64)
    ids = torch.tensor([0, 1, 1, 2, 3, 4])
    summed = cl2l_loss(x, y, [], [], scale, 10.0, ids, local_label_smoothing=0.0)
    torch.testing.assert_close(summed, 2 * clip_loss(x, y, scale, ids))
    mean = cl2l_loss(x, y, [], [], scale, 10.0, reduction="mean")
    torch.testing.assert_close(mean, clip_loss(x, y, scale))


def test_cl2l_rejects_unmatched_views_and_unknown_reduction():
    x = unit(3)
    with pytest.raises(ValueError, match="views"):
        cl2l_loss(x, x, [x], [], 1.0, 1.0)
    with pytest.raises(ValueError, match="reduction"):
        cl2l_loss(x, x, [], [], 1.0, 1.0, reduction="max")


# ---------------------------------------------------------------- BarLIP


def test_barlow_twins_is_zero_at_identity_cross_correlation():
    q, _ = torch.linalg.qr(gauss(8, 5, seed=0))  # orthonormal columns
    z = math.sqrt(8) * q  # z^T z / N = I
    assert barlow_twins(z, z.clone()).item() == pytest.approx(0.0, abs=1e-12)
    assert barlow_twins(z, -z).item() == pytest.approx(0.025 * 4 * 5)  # C = -I


# ---------------------------------------------------------------- SiamLIP


def test_negative_cosine_value_and_stop_gradient():
    p, v = gauss(5, 4, seed=9).requires_grad_(), gauss(5, 4, seed=10).requires_grad_()
    loss = negative_cosine(p, v)
    cos = [float(F.cosine_similarity(p[i], v[i], dim=0).detach()) for i in range(5)]
    assert loss.item() == pytest.approx(sum(2 - 2 * c for c in cos) / 5, rel=1e-12)
    grad_p, grad_v = torch.autograd.grad(loss, [p, v], allow_unused=True)
    assert grad_v is None  # no gradient into the target branch
    # d/dp of -2/B cos(p, v) = -2/B (v/|v| - cos p/|p|) / |p|
    pn, vn = p.detach().norm(dim=1, keepdim=True), v.detach().norm(dim=1, keepdim=True)
    c = torch.tensor(cos, dtype=F64)[:, None]
    want = -2 / 5 * (v.detach() / vn - c * p.detach() / pn) / pn
    torch.testing.assert_close(grad_p, want)
    assert negative_cosine(v, 3 * v).item() == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- SwALIP


def test_sinkhorn_matches_the_reference_and_its_marginals():
    scores = unit(6, seed=30) @ unit(4, seed=31).T  # cosine scores, 6 samples x 4 prototypes
    q = sinkhorn_knopp(scores, 0.05, 3)
    torch.testing.assert_close(q, slow_sinkhorn(scores, 0.05, 3))
    torch.testing.assert_close(q.sum(dim=1), torch.ones(6, dtype=F64))  # assignments
    assert (q >= 0).all()
    converged = sinkhorn_knopp(scores, 0.5, 500)
    torch.testing.assert_close(converged.sum(dim=0), torch.full((4,), 6 / 4, dtype=F64))
    torch.testing.assert_close(sinkhorn_knopp(scores + 3.0, 0.05, 3), q)  # shift-invariant
    big = 50 * scores  # exp(1000) would overflow without the shift
    assert torch.isfinite(sinkhorn_knopp(big, 0.05, 3)).all()


def test_swalip_needs_views():
    with pytest.raises(ValueError, match="views"):
        swalip_loss([], [], 1.0)
    with pytest.raises(ValueError, match="views"):
        swalip_loss([unit(4)], [unit(4), unit(4, seed=1)], 1.0)


# ---------------------------------------------------------------- the method

TEXTS = [
    "a red circle to the left of a blue square",
    "there is a blue square at the top",
    "a red square",
    "a big blue circle above the green star",
    "left of it",
]
VOCAB = WordTokenizer.build(TEXTS).vocab
SIZE = 8
ALL_TERMS = {"cl2l": 1.0, "barlip": 1.0, "siamlip": 0.5, "swalip": 0.2}


def make(method: dict | None = None, cls=CLIPRocket):
    torch.manual_seed(0)
    method = {"name": "clip_rocket", **(method or {})}
    return tiny_module(VOCAB, cls, method, lr=1e-2, warmup_steps=0).double()


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids, mask = WordTokenizer(VOCAB, max_len=8).encode([TEXTS[i % 5] for i in range(SIZE)])
    return {
        "image": torch.rand(SIZE, 3, 16, 16, generator=gen, dtype=F64) * 2 - 1,
        "text_ids": ids,
        "text_mask": mask,
        "index": torch.arange(SIZE),
        "item_id": torch.tensor([0, 1, 2, 3, 0, 1, 4, 5]),
    }


def test_without_views_the_method_is_twice_clip():
    rocket = make({"num_views": 0})
    clip = make({"name": "clip"}, cls=CLIP)
    clip.load_state_dict(rocket.state_dict(), strict=True)
    data = batch()
    terms = rocket.losses(data, rocket.encode(data))
    assert set(terms) == {"cl2l"}
    want = clip.losses(data, clip.encode(data))["clip"]
    torch.testing.assert_close(terms["cl2l"], 2 * want)


def test_terms_follow_the_loss_weights_and_evaluation_reads_the_global_embeddings():
    module = make({"loss_weights": ALL_TERMS}).eval()
    data = batch(1)
    outputs = module.encode(data)
    assert sorted(outputs) == [
        "image",
        "image/view0",
        "image/view1",
        "text",
        "text/view0",
        "text/view1",
    ]
    assert set(module.losses(data, outputs)) == set(ALL_TERMS)
    assert not hasattr(make(), "barlip_heads")  # off by default: not built
    with torch.no_grad():
        got = module._eval_step(data, "val")
        torch.testing.assert_close(
            got["embeddings"]["image"], F.normalize(module.towers["image"](data).pooled, dim=-1)
        )
        torch.testing.assert_close(
            got["embeddings"]["text"], F.normalize(module.towers["text"](data).pooled, dim=-1)
        )
    with pytest.raises(ValueError, match="unknown term"):
        make({"loss_weights": {"byol": 1.0}})
    with pytest.raises(ValueError, match="num_views"):
        make({"num_views": 0, "loss_weights": {"swalip": 0.2}})


def test_local_logit_scale_is_learnable_and_clamped():
    module = make()
    assert module.local_scale.item() == pytest.approx(10.0)
    assert module.local_temperature.log_scale.requires_grad
    with torch.no_grad():
        module.local_temperature.log_scale.fill_(9.0)
    module.local_temperature.clamp_()
    assert module.local_scale.item() == pytest.approx(100.0)


@pytest.mark.parametrize("micro", [2, 4])
def test_cached_gradient_equals_the_gradient_through_the_same_views(micro):
    """Views are random: the cached pass must replay each micro-batch's views, so the result
    equals autograd through the same sequence of micro-batch encodes (as for dropout)."""
    module = make({"loss_weights": ALL_TERMS}).train()
    data = batch(2)
    torch.manual_seed(7)
    parts = [module.encode(m) for m in split_batch(data, micro)]
    joined = {
        side: type(parts[0][side])(
            *(
                None if fields[0] is None else torch.cat(fields)
                for fields in zip(*(p[side] for p in parts), strict=True)
            )
        )
        for side in parts[0]
    }
    module.zero_grad()
    module.total_loss(module.losses(data, joined)).backward()
    params = {n: p for n, p in module.named_parameters() if p.requires_grad}
    expected = {n: p.grad.clone() for n, p in params.items()}
    module.zero_grad()
    torch.manual_seed(7)
    cached_backward(
        module.encode,
        lambda outputs: module.total_loss(module.losses(data, outputs)),
        list(params.values()),
        data,
        micro,
        lambda surrogate, last: surrogate.backward(),
    )
    assert "local_temperature.log_scale" in expected and "barlip_heads.text.0.weight" in expected
    for name, param in params.items():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-9, atol=1e-12, msg=name)
