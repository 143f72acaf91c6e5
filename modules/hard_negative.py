"""Hard-negative SimCLR: the explicit hard-negative contrastive loss of Wang & Liu,
"Understanding the Behaviour of Contrastive Loss" (CVPR 2021), on SimCLR's two views.

The paper shows that the contrastive loss is hardness-aware (its gradient weights each negative
by ``exp(s_ik / tau)``), that the temperature sets how strongly (small ``tau``: the penalty
concentrates on the nearest negatives, uniform embeddings, little tolerance to semantically
similar samples; large ``tau``: nearly uniform penalties, tolerant but less separable: the
uniformity-tolerance dilemma), and that keeping only the hard negatives ``H_i`` in the
denominator (``L_hard``, modules/losses/hard_negative.py) restores the hardness weighting a
large ``tau`` loses, recovering accuracy there (its hard contrastive loss experiments).

Everything but the objective is SimCLR's (modules/simclr.py): one encoder on two augmented
views, the projection head ``g`` (``ProjectionHead``, global BatchNorm), ``z = normalize(g(h))``
(``projected_views``), exactly two views (``check_views``), evaluation on ``h`` before the head.
So ``experiments/hard_negative_simclr.yaml`` against ``experiments/simclr.yaml`` changes one
thing, the loss. ``hard_fraction = 1`` is SimCLR exactly (same loss, same parameters), which
and both expose ``z`` of the evaluation inputs as ``projection/<modality>`` (the space whose
uniformity and tolerance the paper measures).

Scoped down: the paper trains a ResNet-18 with a memory bank of negatives on CIFAR-10/100,
SVHN and ImageNet-100; here the negatives are SimCLR's in-batch ones (2N - 2 per anchor) of the
shapes_views family with a small CNN. ⚠ ``H_i``: the top ``hard_fraction`` (0.25) most similar
negatives of each anchor, see the loss module for why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from modules.losses.hard_negative import hard_negative_loss
from modules.registry import METHODS
from modules.simclr import SimCLR, SimCLRConfig, projected_views
from modules.towers.output import TowerOutput


@dataclass
class HardNegativeSimCLRConfig(SimCLRConfig):
    """SimCLR's config (head widths; ``model.temperature`` is tau) plus ``hard_fraction``: the
    share of each anchor's negatives, the most similar ones, kept in the denominator."""

    name: str = "hard_negative_simclr"
    hard_fraction: float = 0.25
    loss_weights: dict[str, float] = field(default_factory=lambda: {"hard_nt_xent": 1.0})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.hard_fraction <= 1.0:
            raise ValueError(f"hard_fraction must be in (0, 1], got {self.hard_fraction}")


@METHODS.register("hard_negative_simclr", HardNegativeSimCLRConfig)
class HardNegativeSimCLR(SimCLR):
    """``L_hard`` between ``normalize(g(h))`` of the views ``image@0``, ``image@1``, each
    anchor's denominator holding its positive and its ``hard_fraction`` hardest negatives."""

    loss_terms = ("hard_nt_xent",)

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        a, b = projected_views(self, self.head, batch, outputs, (0, 1))
        fraction = self.method_cfg.hard_fraction
        return {"hard_nt_xent": hard_negative_loss(a, b, self.scale, fraction)}
