"""CLIP (Radford et al., ICML 2021): symmetric InfoNCE between the embeddings of a pair of
modalities (image-text, video-text, audio-video, radiograph-report).

Positives come from ``item_id``: the captions of one item are all positives of that item
(and of each other's item rows), never negatives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from modules.base import DualTowerModule, MethodConfig
from modules.losses.contrastive import clip_loss
from modules.registry import METHODS
from modules.towers.output import TowerOutput


@dataclass
class CLIPConfig(MethodConfig):
    name: str = "clip"
    label_smoothing: float = 0.0
    # how the B x B logits are computed, same value and gradients: null chooses (the whole
    # matrix for small batches, tiles above: modules/losses/chunked.py choose_block_elements),
    # 0 the whole matrix, N > 0 tiles of at most N logits (memory O(N) instead of O(B^2))
    chunk_elements: int | None = None
    loss_weights: dict[str, float] = field(default_factory=lambda: {"clip": 1.0})

    def __post_init__(self) -> None:
        if self.chunk_elements is not None and self.chunk_elements < 0:
            raise ValueError(f"chunk_elements: must be >= 0 or null, got {self.chunk_elements}")


@METHODS.register("clip", CLIPConfig)
class CLIP(DualTowerModule):
    """L = ½ [InfoNCE(a→b) + InfoNCE(b→a)] on L2-normalised embeddings of the data's pair
    (a, b) = ``pair`` (the pseudo-code of Fig. 3 in the paper)."""

    loss_terms = ("clip",)

    def losses(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, torch.Tensor]:
        a, b = (self.normalized(side, outputs[side]) for side in self.pair)
        loss = clip_loss(
            a,
            b,
            self.scale,
            ids=batch["item_id"],
            label_smoothing=self.method_cfg.label_smoothing,
            block_elements=self.method_cfg.chunk_elements,
        )
        return {"clip": loss}
