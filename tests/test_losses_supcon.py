"""SupCon (modules/losses/supcon.py) against a slow per-anchor reference, and CoMix's unit
tests on it (methods/part1.md Sec. 5): with one positive on L2-normalised features it is
NT-Xent; with 4 views each anchor has exactly its 3 other views as positives; it does not
depend on the order of the batch; ``keep`` equals running on the kept rows only."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from modules.losses.simclr import nt_xent_loss
from modules.losses.supcon import supcon_loss

F64 = torch.float64
TOL = dict(rtol=0.0, atol=1e-12)


def features(rows: int, dim: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, dim, generator=g, dtype=F64)


def slow_supcon(views, ids, temperature, base_temperature=None, keep=None):
    """Khosla et al. Eq. 2, one anchor at a time over the stacked views of the kept samples."""
    n = views[0].shape[0]
    kept = [i for i in range(n) if keep is None or keep[i]]
    anchors = [(v, i) for v in range(len(views)) for i in kept]
    losses = []
    for v, i in anchors:
        others = [(w, j) for w, j in anchors if (w, j) != (v, i)]
        sims = {o: torch.dot(views[v][i], views[o[0]][o[1]]) / temperature for o in others}
        log_norm = torch.logsumexp(torch.stack(list(sims.values())), dim=0)
        positives = [o for o in others if ids[o[1]] == ids[i]]
        if positives:
            losses.append(-sum(sims[p] - log_norm for p in positives) / len(positives))
    scale = temperature / (base_temperature or temperature)
    return scale * torch.stack(losses).mean()


def test_equals_the_slow_reference_with_classes_views_and_keep():
    ids = torch.tensor([0, 1, 0, 2, 1, 1])
    keep = torch.tensor([True, True, False, True, True, False])
    views = [features(6, seed=s) for s in range(3)]
    for chosen in (None, keep):
        got = supcon_loss(views, ids, 0.5, 0.07, keep=chosen)
        torch.testing.assert_close(got, slow_supcon(views, ids, 0.5, 0.07, chosen), **TOL)


def test_one_positive_on_normalised_features_is_nt_xent():
    a, b = F.normalize(features(8, seed=1), dim=1), F.normalize(features(8, seed=2), dim=1)
    got = supcon_loss([a, b], torch.arange(8), temperature=0.2)
    torch.testing.assert_close(got, nt_xent_loss(a, b, 1 / 0.2), **TOL)


def test_four_views_give_each_anchor_its_three_other_views():
    """One-hot features per video, the same in all 4 views: an anchor's 3 positives sit at
    1/tau and the 4 (b - 1) other views at 0, so the loss is -log(e^{1/tau} / (3 e^{1/tau} +
    4 (b - 1))) exactly when the positives are the video's 3 other views."""
    b, tau = 5, 0.5
    one_hot = torch.eye(b, dtype=F64)
    got = supcon_loss([one_hot] * 4, torch.arange(b), tau)
    expected = -math.log(math.exp(1 / tau) / (3 * math.exp(1 / tau) + 4 * (b - 1)))
    assert abs(got.item() - expected) < 1e-12


def test_invariant_to_the_order_of_the_batch():
    ids = torch.tensor([0, 1, 0, 2, 1, 3])
    views = [features(6, seed=s) for s in range(4)]
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    torch.testing.assert_close(
        supcon_loss([v[order] for v in views], ids[order], 0.5),
        supcon_loss(views, ids, 0.5),
        **TOL,
    )


def test_keep_equals_the_kept_rows_alone_and_none_kept_is_zero_with_a_gradient():
    ids, keep = torch.tensor([0, 1, 0, 2]), torch.tensor([True, False, True, True])
    views = [features(4, seed=s).requires_grad_() for s in range(2)]
    torch.testing.assert_close(
        supcon_loss(views, ids, 0.5, keep=keep),
        supcon_loss([v[keep] for v in views], ids[keep], 0.5),
        **TOL,
    )
    none = supcon_loss(views, ids, 0.5, keep=torch.zeros(4, dtype=torch.bool))
    none.backward()
    assert none.item() == 0.0 and all(torch.equal(v.grad, torch.zeros_like(v)) for v in views)


def test_base_temperature_scales_the_loss_and_gradients_are_finite():
    views = [features(6, seed=s).softmax(dim=1).requires_grad_() for s in range(2)]
    ids = torch.arange(6)
    plain = supcon_loss(views, ids, 0.5)
    scaled = supcon_loss(views, ids, 0.5, 0.07)
    torch.testing.assert_close(scaled, plain * 0.5 / 0.07, **TOL)
    scaled.backward()
    assert all(torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0 for v in views)
