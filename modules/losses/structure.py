"""The STRUCTURE regulariser (Gröger et al., "With Limited Data for Multimodal Alignment, Let
the STRUCTURE Guide You"), as in the official code (``src/loss/clip_loss.py``,
``structure_reg`` with ``distance: cosine``, ``centering: mean``, ``center_first: false``,
margin 0; checked in the author's fork hhxk233/STRUCTURE):

1. L2-normalise the rows of the frozen features ``O`` and of the aligned features ``A``, then
   mean-centre each across the batch (after normalisation, no re-normalisation);
2. ``S = X Xᵀ / τ`` and row-softmax neighbourhoods ``P = softmax(S_O)``, ``Q = softmax(S_A)``;
3. for levels ``l = 1..L``: multi-hop random walks ``P^l``, ``Q^l``, ``M = ½(P^l + Q^l)`` and
   ``D_l = ½[KL(M‖Q^l) + KL(M‖P^l)]`` (mean over rows, ε = 1e-12 inside the logs);
4. ``R = (1/L) Σ_l w_l D_l`` with ``w_l = 1`` (``none``) or ``1/l`` (``inverse``).

``js_form``: the code's ``F.kl_div(log X, M)`` is ``KL(M‖X)``, so the code's "JS" is
``½[KL(M‖Q)+KL(M‖P)]`` (``code``, the default), not the textbook Jensen-Shannon
``½[KL(P‖M)+KL(Q‖M)]`` (``textbook``). Both are symmetric and zero iff ``P = Q``.

Only row-to-row relations enter ``R``, so ``O`` and ``A`` may have different widths.
``R`` relates every pair of the global batch: :func:`structure_regulariser` takes this rank's
local rows and gathers both inputs inside (``gather_with_grad``), so every rank computes the
same global value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.distributed import gather_with_grad

WEIGHTINGS = ("none", "inverse")
JS_FORMS = ("code", "textbook")


def neighbourhoods(x: Tensor, tau: float) -> Tensor:
    """Row-stochastic ``softmax_row(X̂ X̂ᵀ / τ)`` of the L2-normalised, batch-centred rows."""
    unit = F.normalize(x, dim=1)
    centred = unit - unit.mean(dim=0, keepdim=True)
    return (centred @ centred.T / tau).softmax(dim=1)


def _kl(target: Tensor, other: Tensor, eps: float) -> Tensor:
    """``KL(target‖other)`` summed over columns, averaged over rows, with ε in the logs: the
    value of ``F.kl_div((other + ε).log(), target + ε, reduction="batchmean")``."""
    smoothed = target + eps
    return (smoothed * (smoothed.log() - (other + eps).log())).sum() / len(target)


def js_divergence(p: Tensor, q: Tensor, js_form: str = "code", eps: float = 1e-12) -> Tensor:
    """``½[KL(M‖Q) + KL(M‖P)]`` (``code``) or ``½[KL(P‖M) + KL(Q‖M)]`` (``textbook``),
    ``M = ½(P + Q)``, between row-stochastic ``p`` and ``q``."""
    m = 0.5 * (p + q)
    if js_form == "code":
        return 0.5 * (_kl(m, q, eps) + _kl(m, p, eps))
    if js_form == "textbook":
        return 0.5 * (_kl(p, m, eps) + _kl(q, m, eps))
    raise ValueError(f"js_form: expected one of {JS_FORMS}, got {js_form!r}")


def structure_regulariser(
    original: Tensor,
    aligned: Tensor,
    levels: int = 1,
    tau: float = 0.05,
    weighting: str = "none",
    js_form: str = "code",
    eps: float = 1e-12,
) -> Tensor:
    """``R(O, A)``: how much the aligned features' multi-hop neighbourhoods in the global batch
    differ from the frozen features' (local rows of ``original`` [b, D_O] and ``aligned``
    [b, D_A] pair up). Both are gathered with gradients, so a gradient reaches ``original`` only
    if the caller did not detach it (the method passes the frozen features detached).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting: expected one of {WEIGHTINGS}, got {weighting!r}")
    if levels < 1:
        raise ValueError(f"levels: must be at least 1, got {levels}")
    if len(original) != len(aligned):
        raise ValueError(f"{len(original)} original rows but {len(aligned)} aligned rows")
    original, aligned = gather_with_grad(original), gather_with_grad(aligned)
    p, q = neighbourhoods(original, tau), neighbourhoods(aligned, tau)
    total = p.new_zeros(())
    for level in range(1, levels + 1):
        divergence = js_divergence(
            torch.linalg.matrix_power(p, level), torch.linalg.matrix_power(q, level), js_form, eps
        )
        total = total + (divergence / level if weighting == "inverse" else divergence)
    return total / levels


def structure_weight(step: int, lam: float, warmup: int) -> float:
    """``λ_t = λ · min(1, t / warmup)`` (the official ``CLIPLoss.step``); ``λ`` from the start
    when ``warmup`` is 0."""
    return lam * min(1.0, step / warmup) if warmup > 0 else lam
