"""Contrastive gap (Fahim, Murphy & Fyshe, 2024): CLIP at a fixed temperature plus in-modal
uniformity, cross-modal uniformity and alignment, each with weight 1 (the official code's
``uniformity_loss``, ``cross_uniformity_loss`` and ``alignment_loss`` flags):

- CUAXU: ``L = L_CLIP + L_unif + L_xunif + L_align``;
- CUA: the same with ``loss_weights.xunif: 0``.

The regularisers act on the L2-normalised embeddings of the whole batch (the losses gather
across ranks).
The paper fixes tau = 0.01: ``model.temperature: 0.01`` with ``learnable_temperature: false``
in experiments/cuaxu.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from modules.base import DualTowerModule, MethodConfig
from modules.losses.contrastive import clip_loss
from modules.losses.contrastive_gap import alignment, cross_modal_uniformity, in_modal_uniformity
from modules.registry import METHODS
from modules.towers.output import TowerOutput


@dataclass
class CUAXUConfig(MethodConfig):
    name: str = "cuaxu"
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"clip": 1.0, "unif": 1.0, "xunif": 1.0, "align": 1.0}
    )


@METHODS.register("cuaxu", CUAXUConfig)
class CUAXU(DualTowerModule):
    """CLIP + in-modal uniformity + cross-modal uniformity + alignment."""

    loss_terms = ("clip", "unif", "xunif", "align")

    def losses(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, torch.Tensor]:
        x, y = (self.normalized(side, outputs[side]) for side in self.pair)
        return {
            "clip": clip_loss(x, y, self.scale, ids=batch["item_id"]),
            "unif": in_modal_uniformity(x, y),
            "xunif": cross_modal_uniformity(x, y),
            "align": alignment(x, y),
        }
