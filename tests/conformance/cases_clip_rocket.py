"""CLIP🚀's losses on given tensors (the method's BatchNorm heads are outside the loss functions):
CL2L against a transcription of the official ``CL2LLoss`` and a scalar composition, BarLIP's
cross-correlation and SiamLIP's stop-gradient cosine element by element, SwALIP against the
official ``SwALIPLoss`` with an element-by-element Sinkhorn-Knopp.

Views are inputs of shape [N, A, D] (rows first, so that they split across ranks with the
batch) and are unbound into the A tensors [N, D] the losses take.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.losses.clip_rocket import barlip_loss, cl2l_loss, siamlip_loss, swalip_loss
from tests.conformance.cases_contrastive import slow_clip
from tests.conformance.kit import F64, LossCase, randn, unit

N, D = 8, 4
IDS = torch.tensor([0, 1, 2, 0, 3, 1, 4, 5])  # ids 0 and 1 have positives on both ranks


def views(x: Tensor) -> list[Tensor]:
    return list(x.unbind(1))


# ---------------------------------------------------------------- CL2L


def official_cl2l(z_i, z_t, h_i, h_t, scale, h_scale, smoothing, mode):
    """CL2LLoss.forward on one process (diagonal labels), transcribed direction by direction."""
    labels = torch.arange(z_i.shape[0])
    g_i = F.cross_entropy(scale * z_i @ z_t.T, labels)
    g_t = F.cross_entropy(scale * z_t @ z_i.T, labels)
    a = len(h_i)
    image_logits = [h_scale * h @ h_t[i].T for i in range(a) for h in h_i]
    text_logits = [h_scale * h @ h_i[i].T for i in range(a) for h in h_t]
    l_i = sum(F.cross_entropy(x, labels, label_smoothing=smoothing) for x in image_logits)
    l_t = sum(F.cross_entropy(x, labels, label_smoothing=smoothing) for x in text_logits)
    l_i, l_t = l_i / len(image_logits), l_t / len(text_logits)
    loss = ((g_i + l_i * a) / (1 + a) + (g_t + l_t * a) / (1 + a)) / 2
    return loss * (2 if mode == "sum" else 1)


def slow_cl2l(image, text, image_views, text_views, scale, local_scale, ids, eps, local_eps):
    """``[CLIP_g + A mean_{a,b} CLIP(h^I_a, h^T_b)] / (1 + A)`` with the scalar CLIP reference."""
    a = len(image_views)
    local = sum(
        slow_clip(x, y, local_scale, ids, local_eps) for x in image_views for y in text_views
    )
    return (slow_clip(image, text, scale, ids, eps) + local / a) / (1 + a)


def cl2l_inputs(generator: torch.Generator, views_count: int) -> dict[str, Tensor]:
    return {
        "image": unit(generator, N, D),
        "text": unit(generator, N, D),
        "image_views": unit(generator, N, views_count, D),
        "text_views": unit(generator, N, views_count, D),
        "scale": torch.tensor(14.0, dtype=F64),
        "local_scale": torch.tensor(9.0, dtype=F64),
        "ids": IDS.clone(),
    }


def cl2l_case(name: str, views_count: int, loss, reference) -> LossCase:
    """``loss``/``reference`` take (image, text, image views, text views, scale, local scale,
    ids) with the views unbound."""

    def unbound(fn):
        return lambda image, text, image_views, text_views, scale, local_scale, ids: fn(
            image, text, views(image_views), views(text_views), scale, local_scale, ids
        )

    return LossCase(
        name=f"clip_rocket/cl2l_{name}",
        inputs=lambda g: cl2l_inputs(g, views_count),
        per_sample=("image", "text", "image_views", "text_views", "ids"),
        loss=unbound(loss),
        reference=unbound(reference),
        differentiable=("image", "text", "image_views", "text_views", "scale", "local_scale"),
    )


def cl2l_official_case() -> LossCase:
    """Two views, "sum" mode, diagonal positives: the official code's setting."""

    def loss(image, text, image_views, text_views, scale, local_scale, ids):
        return cl2l_loss(
            image, text, image_views, text_views, scale, local_scale, None, 0.0, 0.1, "sum"
        )

    def reference(image, text, image_views, text_views, scale, local_scale, ids):
        return official_cl2l(image, text, image_views, text_views, scale, local_scale, 0.1, "sum")

    return cl2l_case("official_two_views_sum", 2, loss, reference)


def cl2l_ids_case() -> LossCase:
    """One view, "mean" mode, id-defined positives, label smoothing on both parts."""

    def loss(image, text, image_views, text_views, scale, local_scale, ids):
        return cl2l_loss(
            image, text, image_views, text_views, scale, local_scale, ids, 0.05, 0.1, "mean"
        )

    def reference(image, text, image_views, text_views, scale, local_scale, ids):
        return slow_cl2l(image, text, image_views, text_views, scale, local_scale, ids, 0.05, 0.1)

    return cl2l_case("ids_one_view_mean", 1, loss, reference)


# ---------------------------------------------------------------- BarLIP


def slow_barlow(z1: Tensor, z2: Tensor, lamb: float, scale: float) -> Tensor:
    """``scale [sum_i (C_ii - 1)^2 + lamb sum_{i != j} C_ij^2]`` with
    ``C_ij = (1/N) sum_b z1_bi z2_bj``, entry by entry."""
    n, d = z1.shape
    total = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(z1[b, i] * z2[b, j] for b in range(n)) / n
            total = total + ((c - 1) ** 2 if i == j else lamb * c**2)
    return scale * total


def slow_barlip(image, text, image_views, text_views, lamb, scale):
    pairs = [(image, text), *((a, b) for a in image_views for b in text_views)]
    return sum(slow_barlow(a, b, lamb, scale) for a, b in pairs) / len(pairs)


def projections(generator: torch.Generator) -> dict[str, Tensor]:
    """Head outputs (BatchNorm-like: zero-mean, unit-variance columns are typical)."""
    return {
        "image": randn(generator, N, 3),
        "text": randn(generator, N, 3),
        "image_views": randn(generator, N, 2, 3),
        "text_views": randn(generator, N, 2, 3),
    }


def barlip_case(name: str, lamb: float, scale: float) -> LossCase:
    return LossCase(
        name=f"clip_rocket/barlip_{name}",
        inputs=projections,
        per_sample=("image", "text", "image_views", "text_views"),
        loss=lambda image, text, image_views, text_views: barlip_loss(
            image, text, views(image_views), views(text_views), lamb, scale
        ),
        reference=lambda image, text, image_views, text_views: slow_barlip(
            image, text, views(image_views), views(text_views), lamb, scale
        ),
        differentiable=("image", "text", "image_views", "text_views"),
    )


# ---------------------------------------------------------------- SiamLIP


def slow_negative_cosine(p: Tensor, v: Tensor) -> Tensor:
    """``2 - 2 mean_i cos(p_i, v_i)`` with ``v`` as plain floats (stop-gradient)."""
    n, d = p.shape
    total = 0.0
    for i in range(n):
        target = [float(x) for x in v[i]]
        norm_v = math.sqrt(sum(x * x for x in target))
        norm_p = torch.sqrt(sum(p[i, k] ** 2 for k in range(d)))
        total = total + sum(p[i, k] * target[k] for k in range(d)) / (norm_p * norm_v)
    return 2 - 2 * total / n


def slow_siamlip(predicted, targets, predicted_views, target_views) -> Tensor:
    """Mean of the negative cosines (image prediction, text target), (text prediction, image
    target) over the global pair and every view pair; arguments as ``siamlip_loss`` takes them."""
    (p_image, p_text), (v_image, v_text) = predicted, targets
    terms = [slow_negative_cosine(p_image, v_text), slow_negative_cosine(p_text, v_image)]
    terms += [slow_negative_cosine(p, v) for p in predicted_views[0] for v in target_views[1]]
    terms += [slow_negative_cosine(p, v) for p in predicted_views[1] for v in target_views[0]]
    return sum(terms) / len(terms)


SIAMLIP_PREDICTED = ("p_image", "p_text", "p_image_views", "p_text_views")
SIAMLIP_TARGETS = ("v_image", "v_text", "v_image_views", "v_text_views")


def siamlip_inputs(generator: torch.Generator) -> dict[str, Tensor]:
    """Predictor outputs ``p`` and projector outputs ``v`` (the stopped targets), 2 views."""
    out = {}
    for name in SIAMLIP_PREDICTED + SIAMLIP_TARGETS:
        out[name] = randn(generator, N, 2, D) if name.endswith("views") else randn(generator, N, D)
    return out


def siamlip_args(t: dict[str, Tensor]) -> tuple:
    """(predicted, targets, predicted views, target views), each an (image, text) pair."""
    return (
        (t["p_image"], t["p_text"]),
        (t["v_image"], t["v_text"]),
        (views(t["p_image_views"]), views(t["p_text_views"])),
        (views(t["v_image_views"]), views(t["v_text_views"])),
    )


# ---------------------------------------------------------------- SwALIP


def slow_sinkhorn(scores: Tensor, eps: float, iters: int) -> Tensor:
    """SwALIPLoss.sinkhorn_knopp element by element (one process, plain floats)."""
    b, k = scores.shape
    q = [[math.exp(float(scores[i, j]) / eps) for i in range(b)] for j in range(k)]  # [K][B]
    total = sum(map(sum, q))
    q = [[x / total for x in row] for row in q]
    for _ in range(iters):
        q = [[x / sum(row) / k for x in row] for row in q]
        cols = [sum(q[j][i] for j in range(k)) for i in range(b)]
        q = [[q[j][i] / cols[i] / b for i in range(b)] for j in range(k)]
    return torch.tensor([[q[j][i] * b for j in range(k)] for i in range(b)], dtype=F64)


def official_swalip(h_i, h_t, h_scale, eps, iters):
    """SwALIPLoss.forward's SwALIP part on one process, with the view pair (a, b) trained towards
    the targets of (a + 1 mod A, b + 1 mod A) (the official ``1 - a`` for its A = 2)."""
    a_count = len(h_i)
    img = [[h @ ha.T for ha in h_t] for h in h_i]
    txt = [[h @ ha.T for ha in h_i] for h in h_t]
    t_img = [[slow_sinkhorn(t.detach(), eps, iters) for t in i] for i in img]
    t_txt = [[slow_sinkhorn(i.detach(), eps, iters) for i in t] for t in txt]

    def ce(logits, targets):
        return -torch.mean(torch.sum(targets * torch.log_softmax(logits, dim=1), dim=1))

    loss = 0
    for l1 in range(a_count):
        for l2 in range(a_count):
            t1, t2 = (l1 + 1) % a_count, (l2 + 1) % a_count
            loss += (
                ce(img[l1][l2] * h_scale, t_img[t1][t2]) + ce(txt[l1][l2] * h_scale, t_txt[t1][t2])
            ) / 2
    return loss / a_count**2


def local_projections(generator: torch.Generator, views_count: int) -> dict[str, Tensor]:
    return {
        "image_views": unit(generator, N, views_count, D),
        "text_views": unit(generator, N, views_count, D),
        "local_scale": torch.tensor(10.0, dtype=F64),
    }


def swalip_case(views_count: int, epsilon: float, iterations: int) -> LossCase:
    return LossCase(
        name=f"clip_rocket/swalip_views{views_count}",
        inputs=lambda g: local_projections(g, views_count),
        per_sample=("image_views", "text_views"),
        loss=lambda image_views, text_views, local_scale: swalip_loss(
            views(image_views), views(text_views), local_scale, epsilon, iterations
        ),
        reference=lambda image_views, text_views, local_scale: official_swalip(
            views(image_views), views(text_views), local_scale, epsilon, iterations
        ),
        differentiable=("image_views", "text_views", "local_scale"),
        gradcheck=False,
        note="the Sinkhorn targets are detached functions of the same views: finite differences "
        "see a dependence that the analytical gradient drops on purpose",
    )


CASES = [
    cl2l_official_case(),
    cl2l_ids_case(),
    barlip_case("official_weights", 5e-3, 0.025),
    barlip_case("heavy_off_diagonal", 0.3, 2.0),
    LossCase(
        name="clip_rocket/siamlip",
        inputs=siamlip_inputs,
        per_sample=SIAMLIP_PREDICTED + SIAMLIP_TARGETS,
        loss=lambda **t: siamlip_loss(*siamlip_args(t)),
        reference=lambda **t: slow_siamlip(*siamlip_args(t)),
        differentiable=SIAMLIP_PREDICTED,
        no_grad=SIAMLIP_TARGETS,
    ),
    swalip_case(2, 0.05, 3),
    swalip_case(3, 0.1, 5),
]
