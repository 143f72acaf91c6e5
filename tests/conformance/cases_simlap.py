"""SimLAP's gated loss (modules/losses/simlap.py) against the slow loop of
tests/test_losses_simlap.py: separate anchors and candidates with two labelings, and the
module's own call (the anchors are the candidates, one labeling), both with positives and
excluded classes on both ranks."""

from __future__ import annotations

import torch
from torch import Tensor

from modules.losses.simlap import simlap_loss
from tests.conformance.kit import LossCase, randn
from tests.test_losses_simlap import LABELS, Y1, Y2, slow_simlap

N, D = 8, 5


def simlap_case(name: str, self_contrast: bool) -> LossCase:
    labels = LABELS[:, :1] if self_contrast else LABELS
    y2 = Y2 % 3 if self_contrast else Y2
    y1 = LABELS[:, 0] if self_contrast else Y1

    def inputs(generator: torch.Generator) -> dict[str, Tensor]:
        return {
            "z": randn(generator, N, D),
            "candidates": randn(generator, N, D),
            "gates": torch.sigmoid(randn(generator, N, D)),
            "y1": y1.clone(),
            "y2": y2.clone(),
            "labels": labels.clone(),
        }

    def loss(z, candidates, gates, y1, y2, labels) -> Tensor:
        return simlap_loss(z, z if self_contrast else candidates, gates, y1, y2, labels, 10.0)

    def reference(z, candidates, gates, y1, y2, labels) -> Tensor:
        return slow_simlap(z, z if self_contrast else candidates, gates, y1, y2, labels, 10.0)

    return LossCase(
        name=f"simlap/{name}",
        inputs=inputs,
        per_sample=("z", "candidates", "gates", "y1", "y2", "labels"),
        loss=loss,
        reference=reference,
        differentiable=("z", "gates") if self_contrast else ("z", "candidates", "gates"),
    )


CASES = [
    simlap_case("two_labelings", self_contrast=False),
    simlap_case("anchors_are_candidates", self_contrast=True),
]
