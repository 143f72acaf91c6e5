"""Procrustes, CSLS, the refinement and RCSLS (modules/losses/word_alignment.py) against slow
loop references and the spec's checks (methods/part2.md Sec. 56)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from modules.losses.word_alignment import (
    csls,
    mutual_csls_pairs,
    procrustes,
    rcsls_loss,
    refined_procrustes,
)


def orthogonal(d: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed)))
    return q.double()


def unit_rows(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


def slow_csls(mapped: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    ns, nt = len(mapped), len(target)
    cos = [[float(mapped[i] @ target[j]) for j in range(nt)] for i in range(ns)]
    r_t = [sum(sorted(cos[i], reverse=True)[:k]) / k for i in range(ns)]
    r_s = [sum(sorted((cos[i][j] for i in range(ns)), reverse=True)[:k]) / k for j in range(nt)]
    out = torch.empty(ns, nt, dtype=torch.float64)
    for i in range(ns):
        for j in range(nt):
            out[i, j] = 2 * cos[i][j] - r_t[i] - r_s[j]
    return out


def slow_rcsls(x, y, source, target, w, k):
    """RCSLS pair by pair, with torch scalars (differentiable), as align.py's ``getknn``."""
    total = 0.0
    for i in range(len(x)):
        wx = w @ x[i]
        near_t = sorted((wx @ t for t in target), key=lambda v: v.item(), reverse=True)[:k]
        near_s = sorted(((w @ s) @ y[i] for s in source), key=lambda v: v.item(), reverse=True)[:k]
        total = total - 2 * (wx @ y[i]) + sum(near_t) / k + sum(near_s) / k
    return total / len(x)


def test_procrustes_recovers_a_rotation_and_translates_perfectly() -> None:
    x = unit_rows(40, 6, 0)
    r = orthogonal(6, 1)
    w = procrustes(x, x @ r.T)
    assert torch.linalg.norm(w - r) < 1e-5
    ranks = (csls(F.normalize(x @ w.T, dim=1), x @ r.T, 10)).argmax(dim=1)
    assert torch.equal(ranks, torch.arange(40))


def test_procrustes_is_orthogonal_and_beats_other_rotations() -> None:
    x, y = unit_rows(30, 5, 2), unit_rows(30, 5, 3)
    w = procrustes(x, y)
    torch.testing.assert_close(w @ w.T, torch.eye(5, dtype=torch.float64))
    best = torch.linalg.norm(x @ w.T - y)
    for seed in range(5):
        assert best <= torch.linalg.norm(x @ orthogonal(5, seed).T - y) + 1e-9


def test_csls_matches_the_loop_reference() -> None:
    mapped, target = unit_rows(7, 4, 4), unit_rows(9, 4, 5)
    torch.testing.assert_close(csls(mapped, target, 3), slow_csls(mapped, target, 3))


def test_csls_demotes_a_hub() -> None:
    """Sources ``s_i = a e_i + h`` (normalised, a = 0.8), targets ``e_i`` and a hub ``h``: by
    cosine the hub is every source's neighbour (1 > a); CSLS charges the hub its similarity to
    all sources (r_S) and picks each source's own target (5a/3 > 1)."""
    eye = torch.eye(9, dtype=torch.float64)
    mapped = F.normalize(0.8 * eye[:8] + eye[8], dim=1)
    target = eye
    assert torch.equal((mapped @ target.T).argmax(dim=1), torch.full((8,), 8))
    assert torch.equal(csls(mapped, target, 3).argmax(dim=1), torch.arange(8))


def test_mutual_pairs_are_mutual_nearest_neighbours() -> None:
    mapped, target = unit_rows(10, 4, 8), unit_rows(12, 4, 9)
    scores = csls(mapped, target, 3)
    pairs = mutual_csls_pairs(mapped, target, 3)
    expected = [
        (i, int(scores[i].argmax()))
        for i in range(10)
        if int(scores[:, int(scores[i].argmax())].argmax()) == i
    ]
    assert [tuple(p) for p in pairs.tolist()] == expected


def test_refinement_recovers_a_rotation_from_a_few_noisy_seed_pairs() -> None:
    x = unit_rows(60, 8, 10)
    r = orthogonal(8, 11)
    y = F.normalize(x @ r.T + 0.02 * unit_rows(60, 8, 12), dim=1)
    seed = torch.stack([torch.arange(16), torch.arange(16)], dim=1)
    seed[:3, 1] = torch.tensor([1, 2, 0])  # three wrong seed pairs
    plain = procrustes(x[seed[:, 0]], y[seed[:, 1]])
    refined = refined_procrustes(x, y, seed, refinements=3, k=5)
    assert torch.linalg.norm(refined - r) < torch.linalg.norm(plain - r)
    assert torch.linalg.norm(refined - r) < 0.1


def test_rcsls_matches_the_loop_reference_and_its_gradient() -> None:
    x, y = unit_rows(5, 4, 13), unit_rows(5, 4, 14)
    source, target = unit_rows(9, 4, 15), unit_rows(11, 4, 16)
    w = (orthogonal(4, 17) + 0.1 * torch.eye(4, dtype=torch.float64)).requires_grad_()
    loss = rcsls_loss(x, y, source, target, w, 3)
    torch.testing.assert_close(loss, slow_rcsls(x, y, source, target, w, 3))
    assert torch.autograd.gradcheck(lambda m: rcsls_loss(x, y, source, target, m, 3), (w,))


def test_rcsls_is_lower_for_the_true_map() -> None:
    x = unit_rows(50, 6, 18)
    r = orthogonal(6, 19)
    good = rcsls_loss(x[:20], x[:20] @ r.T, x, x @ r.T, r, 10)
    bad = rcsls_loss(x[:20], x[:20] @ r.T, x, x @ r.T, orthogonal(6, 20), 10)
    assert good < bad
