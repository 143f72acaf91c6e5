"""SepCLR's objective (modules/losses/sepclr.py) against a slow loop reference written from the
definitions of methods/part1.md Sec. 21 and the official ``losses.py``, and the spec's unit
tests: the background regulariser is 0 at null background codes; ``unif`` uses only the pairs
i < j; JEM with a constant salient code is ``mean_i log mean_j k(c_i, c_j)``; gradients match
the reference's and never reach the background rows through ``s~``."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modules.losses.sepclr import PAPER_WEIGHTS, align, jem, sepclr_loss, sepclr_terms, unif

F64 = torch.float64
TOL = dict(rtol=0.0, atol=1e-10)
TAU = 0.5


def kernel(x: torch.Tensor, y: torch.Tensor, tau: float = TAU) -> torch.Tensor:
    return torch.exp(-torch.sum((x - y) ** 2) / (2 * tau))


def slow_align(x, y, tau=TAU):
    if len(x) == 0:
        return torch.zeros((), dtype=F64)
    return sum(torch.sum((x[i] - y[i]) ** 2) / (2 * tau) for i in range(len(x))) / len(x)


def slow_unif(x, tau=TAU):
    pairs = [kernel(x[i], x[j], tau) for i in range(len(x)) for j in range(i + 1, len(x))]
    return torch.log(sum(pairs) / len(pairs))


def slow_jem(c, s, tau=TAU):
    n = len(c)
    rows = [
        torch.log(sum(kernel(c[i], c[j], tau) * kernel(s[i], s[j], tau) for j in range(n)) / n)
        for i in range(n)
    ]
    return sum(rows) / n


def slow_terms(c1, c2, s1, s2, target, tau=TAU):
    """The official training step's terms, one item at a time."""
    t = [i for i in range(len(target)) if target[i]]
    b = [i for i in range(len(target)) if not target[i]]
    null1 = torch.stack([s1[i] if target[i] else torch.zeros_like(s1[i]) for i in range(len(s1))])
    null2 = torch.stack([s2[i] if target[i] else torch.zeros_like(s2[i]) for i in range(len(s2))])
    zero = torch.zeros(len(b), s1.shape[1], dtype=s1.dtype)
    return {
        "common": slow_align(c1, c2, tau) + 2.0 * (slow_unif(c1, tau) + slow_unif(c2, tau)) / 2,
        "salient": slow_align(s1[t], s2[t], tau)
        + 2.0 * (slow_unif(null1, tau) + slow_unif(null2, tau)) / 2,
        "background": (slow_align(zero, s1[b], tau) + slow_align(zero, s2[b], tau)) / 2,
        "jem": (slow_jem(c1, null1, tau) + slow_jem(c2, null2, tau)) / 2,
    }


def slow_loss(c1, c2, s1, s2, target, tau=TAU):
    terms = slow_terms(c1, c2, s1, s2, target, tau)
    return sum(PAPER_WEIGHTS[k] * v for k, v in terms.items())


def codes(n: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    c1, c2 = (F.normalize(torch.randn(n, 4, generator=g, dtype=F64), dim=1) for _ in range(2))
    s1, s2 = (torch.randn(n, 3, generator=g, dtype=F64) for _ in range(2))
    target = torch.tensor([1, 0, 1, 1, 0, 0][:n], dtype=torch.bool)
    return c1, c2, s1, s2, target


def test_terms_equal_the_slow_reference():
    got = sepclr_terms(*codes())
    want = slow_terms(*codes())
    assert set(got) == set(PAPER_WEIGHTS)
    for name in got:
        torch.testing.assert_close(got[name], want[name], **TOL, msg=name)


def test_gradients_equal_the_reference_and_skip_null_background_rows():
    inputs = [x.clone().requires_grad_(x.is_floating_point()) for x in codes()]
    sepclr_loss(*inputs).backward()
    reference = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in codes()]
    slow_loss(*reference).backward()
    for got, want in zip(inputs[:4], reference[:4], strict=True):
        torch.testing.assert_close(got.grad, want.grad, rtol=0.0, atol=1e-8)
    # Without the background term, nothing reaches the background rows of s (they enter as 0).
    c1, c2, s1, s2, target = (x.clone() for x in codes())
    s1.requires_grad_(True)
    terms = sepclr_terms(c1, c2, s1, s2, target)
    (terms["salient"] + terms["jem"]).backward()
    assert torch.all(s1.grad[~target] == 0) and torch.all(s1.grad[target].abs().sum(1) > 0)


def test_background_regulariser_is_zero_at_null_background_codes():
    c1, c2, s1, s2, target = codes()
    s1[~target], s2[~target] = 0.0, 0.0
    assert sepclr_terms(c1, c2, s1, s2, target)["background"].item() == 0.0
    s1[~target] = 1.0  # and grows with them: ||1||^2 * 3 dims / (2 tau) / 2 views
    assert sepclr_terms(c1, c2, s1, s2, target)["background"].item() == pytest.approx(1.5)


def test_unif_uses_only_the_pairs_i_below_j():
    x = torch.tensor([[0.0], [1.0], [3.0]], dtype=F64)
    # pairs (0,1), (0,2), (1,2): squared distances 1, 9, 4; no i = j term, no double counting
    want = math.log((math.exp(-1) + math.exp(-9) + math.exp(-4)) / 3)
    assert unif(x).item() == pytest.approx(want, abs=1e-12)
    # a duplicate of row 0 adds exactly one pair of distance 0 per copy partner, not the diagonal
    with_copy = torch.cat([x, x[:1]])
    pairs = [1, 9, 0, 4, 1, 9]
    assert unif(with_copy).item() == pytest.approx(
        math.log(sum(math.exp(-d) for d in pairs) / 6), abs=1e-12
    )


def test_jem_with_a_constant_salient_code_is_the_common_log_mean_kernel():
    c1, *_ = codes()
    constant = torch.full((len(c1), 3), 0.7, dtype=F64)
    want = torch.stack(
        [
            torch.log(torch.stack([kernel(c1[i], c1[j]) for j in range(len(c1))]).mean())
            for i in range(len(c1))
        ]
    ).mean()
    torch.testing.assert_close(jem(c1, constant), want, **TOL)


def test_stable_where_the_official_exp_mean_log_underflows():
    far = torch.tensor([[0.0], [100.0], [250.0]], dtype=F64, requires_grad=True)
    value = unif(far)  # exp(-1e4) underflows to 0: the code's log(0) = -inf
    value.backward()
    assert torch.isfinite(value) and value.item() == pytest.approx(-1e4 - math.log(3), rel=1e-9)
    assert torch.isfinite(far.grad).all()


def test_a_batch_of_one_set_only_has_a_zero_alignment_term_for_the_other():
    c1, c2, s1, s2, _ = codes()
    none = torch.zeros(6, dtype=torch.bool)
    terms = sepclr_terms(c1, c2, s1, s2, none)
    assert torch.isfinite(torch.stack(list(terms.values()))).all()
    torch.testing.assert_close(terms["salient"], slow_terms(c1, c2, s1, s2, none)["salient"])
    assert align(s1[:0], s2[:0]).item() == 0.0
