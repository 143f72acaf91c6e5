"""RaFA and HyCD (CLIP-Refine): hand computations and limit cases (slow references, gradcheck
and DDP are in the conformance kit: tests/conformance/cases_clip_refine.py)."""

import pytest
import torch
import torch.nn.functional as F

from modules.losses.clip_refine import hybrid_targets, hycd_loss, rafa_loss, rafa_reference
from modules.losses.contrastive import clip_loss, multi_positive_targets

TOL = dict(rtol=0.0, atol=1e-10)
MULTI_IDS = torch.tensor([2, 0, 1, 0, 2, 0, 3, 1, 0])


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _towers(n=9, d=5, seed=0):
    """Un-normalised student and teacher features (the official code's inputs)."""
    student = [(2.0 * _randn(n, d, seed=seed + k)).requires_grad_() for k in range(2)]
    teacher = [(2.0 * _randn(n, d, seed=seed + 10 + k)).requires_grad_() for k in range(2)]
    return (*student, *teacher)


def test_hycd_alpha_one_is_infonce_on_raw_dot_products():
    si, st, ti, tt = _towers(seed=4)
    hycd = hycd_loss(si, st, ti, tt, alpha=1.0, t_kd=1.0)
    clip = clip_loss(si, st, 1.0)
    torch.testing.assert_close(hycd, clip, **TOL)
    for a, b in zip(
        torch.autograd.grad(hycd, (si, st)), torch.autograd.grad(clip, (si, st)), strict=True
    ):
        torch.testing.assert_close(a, b, **TOL)


def test_hycd_alpha_one_with_ids_is_multi_positive_ce_minus_target_entropy():
    """KL(q||p) = CE_soft(p, q) - H(q): same gradient, value lower by mean_i log |P(i)|."""
    si, st, ti, tt = _towers(seed=5)
    hycd = hycd_loss(si, st, ti, tt, alpha=1.0, t_kd=1.0, ids=MULTI_IDS)
    clip = clip_loss(si, st, 1.0, ids=MULTI_IDS)
    entropy = (MULTI_IDS[:, None] == MULTI_IDS[None, :]).sum(1).double().log().mean()
    torch.testing.assert_close(hycd, clip - entropy, **TOL)
    for a, b in zip(
        torch.autograd.grad(hycd, (si, st)), torch.autograd.grad(clip, (si, st)), strict=True
    ):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("t_kd", [1.0, 2.5])
def test_hycd_alpha_zero_student_equal_teacher_is_zero_with_zero_gradient(t_kd):
    si, st, _, _ = _towers(seed=6)
    loss = hycd_loss(si, st, si.detach().clone(), st.detach().clone(), alpha=0.0, t_kd=t_kd)
    torch.testing.assert_close(loss, torch.zeros((), dtype=torch.float64), **TOL)
    for grad in torch.autograd.grad(loss, (si, st)):
        torch.testing.assert_close(grad, torch.zeros_like(grad), **TOL)
    # A different teacher gives a positive loss (the test data can tell them apart).
    assert hycd_loss(si, st, st.detach(), si.detach(), alpha=0.0, t_kd=t_kd) > 1e-3


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_hybrid_targets_rows_and_limits(alpha):
    teacher = _randn(6, 6, seed=7).requires_grad_()
    ids = torch.tensor([0, 1, 0, 2, 1, 0])
    soft = (teacher.detach() / 2.0).softmax(dim=1)
    for ids_row, hard in (
        (None, torch.eye(6)),
        (ids, multi_positive_targets(ids, ids, dtype=torch.float64)),
    ):
        q = hybrid_targets(teacher, alpha, 2.0, ids_row, ids_row)
        torch.testing.assert_close(q.sum(dim=1), torch.ones(6, dtype=torch.float64), **TOL)
        torch.testing.assert_close(q, alpha * hard.double() + (1 - alpha) * soft, **TOL)
        assert not q.requires_grad


def test_rafa_reference_is_one_standard_normal_draw():
    gen = torch.Generator().manual_seed(123)
    ref = rafa_reference(4, 6, generator=gen, dtype=torch.float64)
    assert ref.shape == (4, 6) and ref.dtype == torch.float64
    twin = torch.Generator().manual_seed(123)
    torch.testing.assert_close(ref, torch.randn(4, 6, generator=twin, dtype=torch.float64))
    # Drawn once: the generator advanced by exactly one [B, d] draw, not one per modality.
    torch.testing.assert_close(
        torch.randn(3, generator=gen, dtype=torch.float64),
        torch.randn(3, generator=twin, dtype=torch.float64),
    )


def test_rafa_loss_matches_hand_computation_with_one_shared_reference():
    b, d = 3, 4
    image, text = _randn(b, d, seed=1), _randn(b, d, seed=2)
    ref = rafa_reference(b, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sq_i = sum(float(image[i, k] - ref[i, k]) ** 2 for i in range(b) for k in range(d))
    sq_t = sum(float(text[i, k] - ref[i, k]) ** 2 for i in range(b) for k in range(d))
    code, paper = rafa_loss(image, text, ref), rafa_loss(image, text, ref, form="paper")
    torch.testing.assert_close(code.item(), sq_i / (b * d) + sq_t / (b * d), **TOL)
    torch.testing.assert_close(paper.item(), 0.5 * (sq_i + sq_t) / b, **TOL)
    torch.testing.assert_close(code, 2.0 / d * paper, **TOL)
    # A separate draw per modality would give a different value on the same data.
    other = _randn(b, d, seed=9)
    assert abs(code.item() - (F.mse_loss(image, ref) + F.mse_loss(text, other)).item()) > 1e-3
    with pytest.raises(ValueError):
        rafa_loss(image, text, ref, form="both")


def test_rafa_pulls_both_modalities_to_the_same_reference():
    ref = _randn(3, 4, seed=3)
    image = _randn(3, 4, seed=4).requires_grad_()
    text = ref.clone().requires_grad_()
    loss = rafa_loss(image, text, ref)
    grad_image, grad_text = torch.autograd.grad(loss, (image, text))
    torch.testing.assert_close(grad_text, torch.zeros_like(grad_text), **TOL)
    torch.testing.assert_close(grad_image, 2.0 * (image - ref).detach() / image.numel(), **TOL)
    torch.testing.assert_close(rafa_loss(ref, ref, ref), torch.zeros((), dtype=torch.float64))
