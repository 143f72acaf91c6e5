"""CLIP🚀 losses against slow references transcribed from the official ``losses.py``
(facebookresearch/clip-rocket), their limits (A = 0, identity cross-correlation, Sinkhorn
marginals, stop-gradient), and the method: CLIP limit, evaluation embeddings, gradient caching."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modules.clip import CLIP
from modules.clip_rocket import CLIPRocket
from modules.grad_cache import cached_backward, split_batch
from modules.losses.clip_rocket import (
    barlip_loss,
    barlow_twins,
    cl2l_loss,
    negative_cosine,
    siamlip_loss,
    sinkhorn_knopp,
    swalip_loss,
)
from modules.losses.contrastive import clip_loss
from modules.towers.tokenizer import WordTokenizer
from tests.tiny_modules import tiny_module

F64 = torch.float64


def unit(rows: int, dim: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=g, dtype=F64), dim=1)


def gauss(rows: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ---------------------------------------------------------------- CL2L


def official_cl2l(z_i, z_t, h_i, h_t, scale, h_scale, smoothing, mode):
    """CL2LLoss.forward, one process, transcribed direction by direction."""
    labels = torch.arange(z_i.shape[0])
    g_i = F.cross_entropy(scale * z_i @ z_t.T, labels)
    g_t = F.cross_entropy(scale * z_t @ z_i.T, labels)
    a = len(h_i)
    l_i = l_t = 0.0
    if a:
        image_logits = [h_scale * h @ h_t[i].T for i in range(a) for h in h_i]
        text_logits = [h_scale * h @ h_i[i].T for i in range(a) for h in h_t]
        l_i = sum(F.cross_entropy(x, labels, label_smoothing=smoothing) for x in image_logits)
        l_t = sum(F.cross_entropy(x, labels, label_smoothing=smoothing) for x in text_logits)
        l_i, l_t = l_i / len(image_logits), l_t / len(text_logits)
    loss = ((g_i + l_i * a) / (1 + a) + (g_t + l_t * a) / (1 + a)) / 2
    return loss * (2 if mode == "sum" else 1)


def test_cl2l_without_views_is_twice_the_clip_loss_in_sum_mode():
    x, y = unit(6, seed=1), unit(6, seed=2)
    scale = torch.tensor(1 / 0.07, dtype=F64)
    ids = torch.tensor([0, 1, 1, 2, 3, 4])
    summed = cl2l_loss(x, y, [], [], scale, 10.0, ids, local_label_smoothing=0.0)
    torch.testing.assert_close(summed, 2 * clip_loss(x, y, scale, ids))
    mean = cl2l_loss(x, y, [], [], scale, 10.0, reduction="mean")
    torch.testing.assert_close(mean, clip_loss(x, y, scale))


@pytest.mark.parametrize("views", [1, 2, 3])
@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_cl2l_matches_the_official_loss(views, mode):
    x, y = unit(7, seed=3), unit(7, seed=4)
    h_i = [unit(7, seed=10 + a) for a in range(views)]
    h_t = [unit(7, seed=20 + a) for a in range(views)]
    scale, h_scale = torch.tensor(14.0, dtype=F64), torch.tensor(9.0, dtype=F64)
    got = cl2l_loss(x, y, h_i, h_t, scale, h_scale, local_label_smoothing=0.1, reduction=mode)
    want = official_cl2l(x, y, h_i, h_t, scale, h_scale, 0.1, mode)
    torch.testing.assert_close(got, want)
    # the global pair has no label smoothing in the official code; the local pairs have it
    assert not torch.allclose(
        cl2l_loss(x, y, h_i, h_t, scale, h_scale, local_label_smoothing=0.0, reduction=mode), want
    )


def test_cl2l_rejects_unmatched_views_and_unknown_reduction():
    x = unit(3)
    with pytest.raises(ValueError, match="views"):
        cl2l_loss(x, x, [x], [], 1.0, 1.0)
    with pytest.raises(ValueError, match="reduction"):
        cl2l_loss(x, x, [], [], 1.0, 1.0, reduction="max")


# ---------------------------------------------------------------- BarLIP


def slow_barlow(z1, z2, lamb, scale):
    n, d = z1.shape
    total = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(float(z1[b, i] * z2[b, j]) for b in range(n)) / n
            total += (c - 1) ** 2 if i == j else lamb * c**2
    return scale * total


def test_barlow_twins_is_zero_at_identity_cross_correlation():
    q, _ = torch.linalg.qr(gauss(8, 5, seed=0))  # orthonormal columns
    z = math.sqrt(8) * q  # z^T z / N = I
    assert barlow_twins(z, z.clone()).item() == pytest.approx(0.0, abs=1e-12)
    assert barlow_twins(z, -z).item() == pytest.approx(0.025 * 4 * 5)  # C = -I


def test_barlow_twins_matches_the_per_element_reference():
    z1, z2 = gauss(6, 4, seed=1), gauss(6, 4, seed=2)
    assert barlow_twins(z1, z2, 5e-3, 0.025).item() == pytest.approx(
        slow_barlow(z1, z2, 5e-3, 0.025), rel=1e-12
    )
    assert barlow_twins(z1, z2, 0.3, 2.0).item() == pytest.approx(
        slow_barlow(z1, z2, 0.3, 2.0), rel=1e-12
    )


def test_barlip_averages_the_global_pair_and_every_view_pair():
    g_i, g_t = gauss(6, 4, seed=3), gauss(6, 4, seed=4)
    v_i = [gauss(6, 4, seed=5), gauss(6, 4, seed=6)]
    v_t = [gauss(6, 4, seed=7), gauss(6, 4, seed=8)]
    pairs = [(g_i, g_t)] + [(a, b) for a in v_i for b in v_t]
    want = sum(slow_barlow(a, b, 5e-3, 0.025) for a, b in pairs) / 5
    assert barlip_loss(g_i, g_t, v_i, v_t).item() == pytest.approx(want, rel=1e-12)


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


def test_siamlip_averages_both_directions_over_global_and_view_pairs():
    p_i, p_t, v_i, v_t = (gauss(5, 4, seed=s) for s in range(11, 15))
    pv_i = [gauss(5, 4, seed=s) for s in (15, 16)]
    pv_t = [gauss(5, 4, seed=s) for s in (17, 18)]
    vv_i = [gauss(5, 4, seed=s) for s in (19, 20)]
    vv_t = [gauss(5, 4, seed=s) for s in (21, 22)]
    got = siamlip_loss((p_i, p_t), (v_i, v_t), (pv_i, pv_t), (vv_i, vv_t))
    terms = [negative_cosine(p_i, v_t), negative_cosine(p_t, v_i)]
    terms += [negative_cosine(p, v) for p in pv_i for v in vv_t]
    terms += [negative_cosine(p, v) for p in pv_t for v in vv_i]
    torch.testing.assert_close(got, sum(terms) / 10)


# ---------------------------------------------------------------- SwALIP


def slow_sinkhorn(scores, eps, iters):
    """SwALIPLoss.sinkhorn_knopp element by element (one process)."""
    b, k = scores.shape
    q = [[math.exp(float(scores[i, j]) / eps) for i in range(b)] for j in range(k)]  # [K][B]
    total = sum(map(sum, q))
    q = [[x / total for x in row] for row in q]
    for _ in range(iters):
        q = [[x / sum(row) / k for x in row] for row in q]
        cols = [sum(q[j][i] for j in range(k)) for i in range(b)]
        q = [[q[j][i] / cols[i] / b for i in range(b)] for j in range(k)]
    return torch.tensor([[q[j][i] * b for j in range(k)] for i in range(b)], dtype=F64)


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


def official_swalip(h_i, h_t, h_scale, eps, iters):
    """SwALIPLoss.forward's SwALIP part (A = 2), one process."""
    img = [[h @ ha.T for ha in h_t] for h in h_i]
    txt = [[h @ ha.T for ha in h_i] for h in h_t]
    t_img = [[sinkhorn_knopp(t.detach(), eps, iters) for t in i] for i in img]
    t_txt = [[sinkhorn_knopp(i.detach(), eps, iters) for i in t] for t in txt]

    def ce(logits, targets):
        return -torch.mean(torch.sum(targets * torch.log_softmax(logits, dim=1), dim=1))

    loss = 0
    for l1 in range(2):
        for l2 in range(2):
            t1, t2 = abs(l1 - 1), abs(l2 - 1)
            loss += (
                ce(img[l1][l2] * h_scale, t_img[t1][t2]) + ce(txt[l1][l2] * h_scale, t_txt[t1][t2])
            ) / 2
    return loss / 4


def test_swalip_matches_the_official_loss_with_gradients():
    h_i = [unit(6, seed=40).requires_grad_(), unit(6, seed=41).requires_grad_()]
    h_t = [unit(6, seed=42).requires_grad_(), unit(6, seed=43).requires_grad_()]
    got = swalip_loss(h_i, h_t, 10.0, 0.05, 3)
    want = official_swalip(h_i, h_t, 10.0, 0.05, 3)
    torch.testing.assert_close(got, want)
    grads = torch.autograd.grad(got, h_i + h_t)
    want_grads = torch.autograd.grad(want, h_i + h_t)
    for g, w in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(g, w)
    with pytest.raises(ValueError, match="views"):
        swalip_loss([], [], 1.0)


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
            got["item"], F.normalize(module.towers["image"](data).pooled, dim=-1)
        )
        torch.testing.assert_close(
            got["caption"], F.normalize(module.towers["text"](data).pooled, dim=-1)
        )
    with pytest.raises(ValueError, match="unknown term"):
        make({"loss_weights": {"byol": 1.0}})
    with pytest.raises(ValueError, match="num_views"):
        make({"num_views": 0, "loss_weights": {"swalip": 0.2}})


def test_local_logit_scale_is_learnable_and_clamped():
    module = make()
    assert module.local_scale.item() == pytest.approx(10.0)
    assert module.local_logit_scale.requires_grad
    with torch.no_grad():
        module.local_logit_scale.fill_(9.0)
    module._clamp_temperature()
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
    assert "local_logit_scale" in expected and "barlip_heads.text.0.weight" in expected
    for name, param in params.items():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-9, atol=1e-12, msg=name)
