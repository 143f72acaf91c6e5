"""CLIP (Radford et al., ICML 2021): symmetric InfoNCE between image and text embeddings.

Positives come from ``image_id``: the captions of one image are all positives of that image
(and of each other's image rows), never negatives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from modules.base import DualTowerModule, MethodConfig
from modules.losses.contrastive import clip_loss
from modules.registry import METHODS
from modules.towers.output import TowerOutput


@dataclass
class CLIPConfig(MethodConfig):
    name: str = "clip"
    label_smoothing: float = 0.0
    loss_weights: dict[str, float] = field(default_factory=lambda: {"clip": 1.0})


@METHODS.register("clip", CLIPConfig)
class CLIP(DualTowerModule):
    """L = ½ [InfoNCE(image→text) + InfoNCE(text→image)] on L2-normalised embeddings."""

    loss_terms = ("clip",)

    def losses(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, torch.Tensor]:
        image = F.normalize(outputs["image"].pooled, dim=-1)
        text = F.normalize(outputs["text"].pooled, dim=-1)
        loss = clip_loss(
            image,
            text,
            self.scale,
            ids=batch["image_id"],
            label_smoothing=self.method_cfg.label_smoothing,
        )
        return {"clip": loss}
