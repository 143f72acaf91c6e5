"""SupReMix (modules/losses/supremix.py) against the explicit-mixture reference of
tests/test_losses_supremix.py: weighted and unweighted, each kind of mixture alone. Each rank
holds [its view-0 rows; its view-1 rows], as a method passes cat(view0, view1); the
anchor-inclusive mixing weights are an input [N, N] whose rows are split with the anchors
(columns in the gathered order). No gradcheck: the mixtures are detached, so the loss's gradient
is not the derivative of its value (the reference, built with explicit detaches, checks it)."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.supremix import supremix_loss
from tests.conformance.kit import F64, LossCase, randn
from tests.test_losses_supremix import slow_supremix

PER_RANK, D = 3, 4  # samples per rank; each appears twice (two views)
#: Targets with bracketing pairs within the window across ranks, equal targets, a far one.
SIZES = torch.tensor([[10.0, 12.5, 30.0], [14.0, 12.5, 11.0]], dtype=F64)


def two_views(generator: torch.Generator) -> dict[str, Tensor]:
    targets = torch.cat([SIZES, SIZES], dim=1).flatten()  # rank r: [y_r, y_r]
    n = targets.numel()
    return {
        "features": randn(generator, n, D),
        "targets": targets,
        "anchor_weight": torch.rand(n, n, generator=generator, dtype=F64),
    }


def supremix_case(name: str, weighted: bool, neg: bool, pos: bool) -> LossCase:
    def loss(features, targets, anchor_weight):
        return supremix_loss(features, targets, anchor_weight, 0.3, 5.0, weighted, neg, pos)

    def reference(features, targets, anchor_weight):
        return slow_supremix(features, targets, anchor_weight, 0.3, 5.0, weighted, neg, pos)

    return LossCase(
        name=f"supremix/{name}",
        inputs=two_views,
        per_sample=("features", "targets", "anchor_weight"),
        loss=loss,
        reference=reference,
        differentiable=("features",),
        gradcheck=False,
        note="detached mixtures: the gradient is checked against the reference",
    )


CASES = [
    supremix_case("official", weighted=True, neg=True, pos=True),
    supremix_case("unweighted", weighted=False, neg=True, pos=True),
    supremix_case("negatives_only", weighted=True, neg=True, pos=False),
    supremix_case("positives_only", weighted=True, neg=False, pos=True),
]
