"""SwAV and the shared Sinkhorn-Knopp: a slow transcription of the official ``main_swav.py``
(``train`` and ``distributed_sinkhorn``), the code marginals, the stop-gradient on the codes,
invariance to a joint permutation of the prototypes, and two gloo ranks against one process."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from modules.losses.sinkhorn import sinkhorn_knopp
from modules.losses.swav import swav_loss
from tests.processes import spawn_and_wait

F64 = torch.float64
TOL = dict(rtol=0.0, atol=1e-10)


def unit(rows: int, dim: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=g, dtype=F64), dim=1)


def official_sinkhorn(out: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """``distributed_sinkhorn(exp(out / eps).t(), iters)`` for one process, element by element
    on Python floats: rows are prototypes, columns samples."""
    b, k = out.shape
    q = [[math.exp(float(out[i, j]) / epsilon) for i in range(b)] for j in range(k)]
    total = sum(map(sum, q))
    q = [[x / total for x in row] for row in q]
    r, c = 1.0 / k, 1.0 / b
    for _ in range(iterations):
        u = [sum(row) for row in q]
        q = [[x * r / u[j] for x in row] for j, row in enumerate(q)]
        col = [sum(q[j][i] for j in range(k)) for i in range(b)]
        q = [[q[j][i] * c / col[i] for i in range(b)] for j in range(k)]
    col = [sum(q[j][i] for j in range(k)) for i in range(b)]
    return torch.tensor([[q[j][i] / col[i] for j in range(k)] for i in range(b)], dtype=F64)


def official_swav(views, prototypes, code_views, temperature, epsilon, iterations):
    """The loss block of ``train`` in main_swav.py (no queue), one process, row by row."""
    output = [z @ prototypes.T for z in views]
    loss = 0.0
    for s in code_views:
        q = official_sinkhorn(output[s].detach(), epsilon, iterations)
        subloss = 0.0
        for v in range(len(views)):
            if v == s:
                continue
            rows = [
                -sum(
                    q[i, j] * torch.log(torch.softmax(output[v][i] / temperature, 0)[j])
                    for j in range(prototypes.shape[0])
                )
                for i in range(q.shape[0])
            ]
            subloss = subloss + sum(rows) / len(rows)
        loss = loss + subloss / (len(views) - 1)
    return loss / len(code_views)


def _problem(b: int = 8, k: int = 5, views: int = 4, seed: int = 0):
    zs = [unit(b, seed=seed + v).requires_grad_() for v in range(views)]
    return zs, unit(k, seed=seed + 100).requires_grad_()


# ---------------------------------------------------------------- Sinkhorn


def test_sinkhorn_matches_the_official_distributed_sinkhorn_for_one_process():
    scores = unit(7, seed=1) @ unit(4, seed=2).T
    for iterations in (1, 3, 10):
        want = official_sinkhorn(scores, 0.05, iterations)
        torch.testing.assert_close(sinkhorn_knopp(scores, 0.05, iterations), want, **TOL)
        got = sinkhorn_knopp(scores, 0.05, iterations, distributed=True)
        torch.testing.assert_close(got, want, **TOL)


def test_codes_sum_to_one_per_sample_and_use_prototypes_about_equally():
    b, k = 64, 8
    scores = unit(b, dim=32, seed=3) @ unit(k, dim=32, seed=4).T
    scores[:, 0] += 0.5  # every sample prefers prototype 0: a collapsed assignment
    raw = torch.softmax(scores / 0.05, dim=1).sum(dim=0)
    assert raw[0] > 0.8 * b
    q = sinkhorn_knopp(scores, 0.05, 3, distributed=True)
    assert (q >= 0).all()
    torch.testing.assert_close(q.sum(dim=1), torch.ones(b, dtype=F64), **TOL)
    uniform = torch.full((k,), b / k, dtype=F64)
    assert torch.allclose(q.sum(dim=0), uniform, rtol=0.15)  # 3 iterations: about B/K
    torch.testing.assert_close(sinkhorn_knopp(scores, 0.05, 500).sum(dim=0), uniform, **TOL)
    # Equipartition ignores a per-prototype offset (the collapse) entirely.
    torch.testing.assert_close(sinkhorn_knopp(scores - 0.5 * (torch.arange(k) == 0), 0.05, 3), q)


def test_codes_are_detached_and_follow_the_scores():
    scores = (unit(6, seed=5) @ unit(3, seed=6).T).requires_grad_()
    q = sinkhorn_knopp(scores, 0.05, 3, distributed=True)
    assert not q.requires_grad
    # A sample whose score for prototype 0 is raised gets more of prototype 0.
    bumped = scores.detach().clone()
    bumped[2, 0] += 0.1
    assert sinkhorn_knopp(bumped, 0.05, 3)[2, 0] > q[2, 0]


def test_low_precision_scores_give_float32_codes():
    scores = (unit(6, seed=7) @ unit(4, seed=8).T).to(torch.bfloat16)
    q = sinkhorn_knopp(scores, 0.05, 3)
    assert q.dtype == torch.float32 and torch.isfinite(q).all()
    torch.testing.assert_close(q, sinkhorn_knopp(scores.float(), 0.05, 3), rtol=0, atol=0)


# ---------------------------------------------------------------- SwAV loss


@pytest.mark.parametrize("views, code_views", [(2, (0, 1)), (4, (0, 1)), (3, (1,))])
def test_swav_matches_the_official_loss_with_gradients(views, code_views):
    zs, c = _problem(views=views)
    got = swav_loss(zs, c, code_views, temperature=0.1, epsilon=0.05, iterations=3)
    want = official_swav(zs, c, code_views, 0.1, 0.05, 3)
    torch.testing.assert_close(got, want, **TOL)
    leaves = [*zs, c]
    grads = torch.autograd.grad(got, leaves, allow_unused=True, materialize_grads=True)
    wants = torch.autograd.grad(want, leaves, allow_unused=True, materialize_grads=True)
    for a, b in zip(grads, wants, strict=True):
        torch.testing.assert_close(a, b, **TOL)
    if code_views == (1,):  # a view used only for codes gets no gradient
        assert grads[1].abs().sum() == 0


def test_swav_gradient_treats_the_codes_as_constants():
    zs, c = _problem(views=2, seed=10)
    loss = swav_loss(zs, c)
    scores = [z @ c.T for z in zs]
    codes = [sinkhorn_knopp(s.detach(), 0.05, 3) for s in scores]
    constant = 0.5 * sum(
        -(codes[s] * F.log_softmax(scores[1 - s] / 0.1, dim=1)).sum(dim=1).mean() for s in (0, 1)
    )
    for a, b in zip(
        torch.autograd.grad(loss, [*zs, c]), torch.autograd.grad(constant, [*zs, c]), strict=True
    ):
        torch.testing.assert_close(a, b, **TOL)


def test_swav_is_invariant_to_a_joint_permutation_of_the_prototypes():
    zs, c = _problem(seed=20)
    perm = torch.randperm(c.shape[0], generator=torch.Generator().manual_seed(0))
    loss = swav_loss(zs, c)
    permuted = swav_loss(zs, c[perm])
    torch.testing.assert_close(permuted, loss, **TOL)
    (grad,) = torch.autograd.grad(loss, c)
    leaf = c.detach()[perm].requires_grad_()
    (grad_permuted,) = torch.autograd.grad(swav_loss(zs, leaf), leaf)
    torch.testing.assert_close(grad_permuted, grad[perm], **TOL)


def test_swav_is_invariant_to_a_joint_permutation_of_the_samples_and_to_swapping_large_crops():
    zs, c = _problem(seed=30)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    loss = swav_loss(zs, c)
    torch.testing.assert_close(swav_loss([z[perm] for z in zs], c), loss, **TOL)
    torch.testing.assert_close(swav_loss([zs[1], zs[0], *zs[2:]], c), loss, **TOL)


def test_swav_rejects_bad_views():
    zs, c = _problem(views=2)
    with pytest.raises(ValueError, match="at least two views"):
        swav_loss(zs[:1], c, (0,))
    with pytest.raises(ValueError, match="must index"):
        swav_loss(zs, c, (0, 2))


# ---------------------------------------------------------------- two ranks vs one process

WORLD, B = 2, 8


def _ranked(rows: slice):
    """Codes, loss and gradients of the rows ``rows`` of a fixed 3-view problem."""
    zs, c = _problem(b=B, k=5, views=3, seed=40)
    local = [z.detach()[rows].clone().requires_grad_() for z in zs]
    c = c.detach().clone().requires_grad_()
    codes = sinkhorn_knopp(local[0] @ c.T, 0.05, 3, distributed=True)
    loss = swav_loss(local, c)
    return {"codes": codes, "loss": loss.detach(), "grads": torch.autograd.grad(loss, [*local, c])}


def _worker(rank: int, store_path: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", store=dist.FileStore(store_path, WORLD), rank=rank, world_size=WORLD
    )
    half = B // WORLD
    torch.save(_ranked(slice(rank * half, (rank + 1) * half)), f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_ranks_equal_one_process(tmp_path):
    spawn_and_wait(_worker, (str(tmp_path / "store"), str(tmp_path)), WORLD)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    full = _ranked(slice(None))
    torch.testing.assert_close(torch.cat([r["codes"] for r in ranks]), full["codes"], **TOL)
    torch.testing.assert_close(sum(r["loss"] for r in ranks) / WORLD, full["loss"], **TOL)
    for v in range(3):  # a rank's views: its rows of the one-process gradient, times WORLD
        got = torch.cat([r["grads"][v] for r in ranks]) / WORLD
        torch.testing.assert_close(got, full["grads"][v], **TOL)
    prototypes = sum(r["grads"][3] for r in ranks) / WORLD  # DDP's average
    torch.testing.assert_close(prototypes, full["grads"][3], **TOL)
