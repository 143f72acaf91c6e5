"""The STRUCTURE regulariser against the spec's checks (invariance across dimensionalities,
sensitivity on clustered data), the two JS forms and the λ warm-up (the element-by-element
reference, gradients and DDP are in the conformance kit: tests/conformance/cases_structure.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modules.losses.structure import (
    js_divergence,
    neighbourhoods,
    structure_regulariser,
    structure_weight,
)


def clustered(seed: int = 0, centres: int = 8, per: int = 8, dim: int = 512) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(centres, dim, generator=g, dtype=torch.float64)
    noise = 0.3 * torch.randn(centres, per, dim, generator=g, dtype=torch.float64)
    return (c[:, None, :] + noise).reshape(centres * per, dim)


def orthogonal(dim: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    return q


@pytest.mark.parametrize(("levels", "weighting"), [(1, "none"), (3, "inverse")])
def test_invariance_across_dimensionalities(levels, weighting):
    x = clustered(seed=2)
    original = torch.cat([x, torch.zeros_like(x)], dim=1)  # n x 1024
    aligned = 2.5 * x @ orthogonal(512)  # n x 512
    for js_form in ("code", "textbook"):
        value = structure_regulariser(original, aligned, levels, 0.05, weighting, js_form)
        assert abs(value.item()) < 1e-8


def test_sensitivity_on_clustered_data():
    x = clustered(seed=0)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(3))
    assert abs(structure_regulariser(x, x.clone()).item()) < 1e-8
    shuffled = structure_regulariser(x, x[perm])
    assert shuffled.item() > 3.0  # about 4.3 in the spec's numpy check
    assert structure_regulariser(x, x[perm], levels=3, weighting="inverse").item() > 2.0


def test_code_form_is_the_official_kl_div_argument_order():
    g = torch.Generator().manual_seed(5)
    p = torch.randn(5, 5, generator=g, dtype=torch.float64).softmax(dim=1)
    q = torch.randn(5, 5, generator=g, dtype=torch.float64).softmax(dim=1)
    m, eps = 0.5 * (p + q), 1e-12
    official = 0.5 * (
        F.kl_div((q + eps).log(), m + eps, reduction="batchmean")
        + F.kl_div((p + eps).log(), m + eps, reduction="batchmean")
    )
    torch.testing.assert_close(js_divergence(p, q, "code"), official)


def test_both_js_forms_are_symmetric_and_zero_iff_equal():
    g = torch.Generator().manual_seed(6)
    p = torch.randn(5, 5, generator=g, dtype=torch.float64).softmax(dim=1)
    q = torch.randn(5, 5, generator=g, dtype=torch.float64).softmax(dim=1)
    for form in ("code", "textbook"):
        assert abs(js_divergence(p, p.clone(), form).item()) < 1e-12
        assert js_divergence(p, q, form).item() > 1e-3
        torch.testing.assert_close(js_divergence(p, q, form), js_divergence(q, p, form))
    assert js_divergence(p, q, "code").item() != pytest.approx(
        js_divergence(p, q, "textbook").item()
    )
    with pytest.raises(ValueError, match="js_form"):
        js_divergence(p, q, "other")


def test_neighbourhoods_are_row_stochastic_and_centred_after_normalisation():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    p = neighbourhoods(x, 0.1)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(6, dtype=torch.float64))
    # rescaling rows changes nothing (normalised first); centring before normalising would
    unit = F.normalize(x, dim=1)
    centred = unit - unit.mean(0)
    torch.testing.assert_close(p, (centred @ centred.T / 0.1).softmax(dim=1))
    scales = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5, 4.0], dtype=torch.float64)[:, None]
    torch.testing.assert_close(neighbourhoods(x * scales, 0.1), p)


def test_invariances_and_gradient():
    x = clustered(seed=8, centres=4, per=4, dim=16)
    g = torch.Generator().manual_seed(9)
    a = (x @ torch.randn(16, 8, generator=g, dtype=torch.float64)).requires_grad_()
    value = structure_regulariser(x, a)
    perm = torch.randperm(len(x), generator=g)
    torch.testing.assert_close(structure_regulariser(x[perm], a[perm]), value)  # pairs kept
    (grad,) = torch.autograd.grad(value, a)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with pytest.raises(ValueError, match="weighting"):
        structure_regulariser(x, a, weighting="log")


def test_lambda_warms_up_linearly():
    assert structure_weight(0, 10.0, 1000) == 0.0
    assert structure_weight(500, 10.0, 1000) == pytest.approx(5.0)
    assert structure_weight(1000, 10.0, 1000) == 10.0
    assert structure_weight(5000, 10.0, 1000) == 10.0
    assert structure_weight(0, 10.0, 0) == 10.0
