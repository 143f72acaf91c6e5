"""CPL's losses (modules/losses/cpl.py) against the slow references of
tests/test_losses_cpl.py: a different number of labelled / unlabelled / voted items on each rank
(the global means), partners on the other rank (L_GLV's gathered probabilities) and the entropy
of the global mean prediction."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.cpl import csp_loss, glv_loss, margin_cross_entropy, mean_entropy
from tests.conformance.kit import LossCase, randn
from tests.test_losses_cpl import slow_csp, slow_entropy, slow_glv, slow_margin_ce

N, K = 8, 5
LABELS = torch.tensor([0, 1, 0, 2, 1, 4, 3, 0])
LABELLED = torch.tensor([1, 1, 1, 0, 0, 1, 0, 0], dtype=torch.bool)  # 3 on rank 0, 1 on rank 1
VOTED = torch.tensor([0, 0, 0, 1, 0, 0, 1, 1], dtype=torch.bool)
PARTNER = torch.tensor([2, 7, 0, 6, 3, 5, 1, 4])  # rows of the global batch, across ranks


def _logits(generator: torch.Generator) -> dict[str, Tensor]:
    return {
        "logits": randn(generator, N, K),
        "gumbel": randn(generator, N, K),
        "labels": LABELS.clone(),
        "labelled": LABELLED.clone(),
        "voted": VOTED.clone(),
        "partner": PARTNER.clone(),
    }


PER_SAMPLE = ("logits", "gumbel", "labels", "labelled", "voted", "partner")


def _as_tensor(value: float, like: Tensor) -> Tensor:
    return torch.as_tensor(value, dtype=like.dtype)


def _case(name: str, loss, reference, gradcheck: bool = True, note: str = "") -> LossCase:
    return LossCase(
        name=f"cpl/{name}",
        inputs=_logits,
        per_sample=PER_SAMPLE,
        loss=loss,
        reference=reference,
        differentiable=("logits",),
        gradcheck=gradcheck,
        note=note,
    )


def _mce(logits, labels, labelled, **_: Tensor) -> Tensor:
    return margin_cross_entropy(logits, labels, labelled, 0.2)


def _mce_ref(logits, labels, labelled, **_: Tensor) -> Tensor:
    # the slow reference works on floats: its value, with the autograd formula's gradient
    value = slow_margin_ce(logits.detach(), labels, labelled, 0.2)
    shift = torch.nn.functional.one_hot(labels, K).to(logits.dtype) * 0.2
    ce = torch.nn.functional.cross_entropy((logits + shift)[labelled], labels[labelled])
    assert abs(float(ce.detach()) - value) < 1e-12
    return ce


def _glv(logits, partner, **_: Tensor) -> Tensor:
    return glv_loss(logits, partner)


def _glv_ref(logits, partner, **_: Tensor) -> Tensor:
    probs = logits.softmax(dim=1)
    value = -(probs * probs[partner]).sum(1).log().clamp_min(-100.0).mean()
    assert abs(float(value.detach()) - slow_glv(logits.detach(), partner)) < 1e-12
    return value


def _csp(logits, gumbel, voted, labelled, **_: Tensor) -> Tensor:
    return csp_loss(logits, gumbel, voted, ~labelled)


def _csp_ref(logits, gumbel, voted, labelled, **_: Tensor) -> Tensor:
    soft = (logits.detach() + gumbel).softmax(dim=1)
    log_p = logits.log_softmax(dim=1)
    conf = log_p.exp().gather(1, soft.argmax(1, keepdim=True)).squeeze(1)
    per_item = -(soft * log_p).sum(1) * conf * (voted & ~labelled).to(logits.dtype)
    value = per_item.sum() / (~labelled).sum()
    assert abs(float(value.detach()) - slow_csp(logits.detach(), gumbel, voted, ~labelled)) < 1e-12
    return value


def _entropy(logits, **_: Tensor) -> Tensor:
    return mean_entropy(logits)


def _entropy_ref(logits, **_: Tensor) -> Tensor:
    mean = logits.softmax(dim=1).mean(0).clamp_min(1e-8)
    value = -(mean * mean.log()).sum()
    assert abs(float(value.detach()) - slow_entropy(logits.detach())) < 1e-12
    return value


CASES = [
    _case("margin_ce", _mce, _mce_ref),
    _case("glv", _glv, _glv_ref),
    _case(
        "csp",
        _csp,
        _csp_ref,
        gradcheck=False,
        note="the pseudo-labels are a stop-gradient; finite differences would move them "
        "(tests/test_losses_cpl.py checks the gradient with them held fixed)",
    ),
    _case("entropy", _entropy, _entropy_ref),
]
