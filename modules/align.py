"""ALIGN (Jia et al., ICML 2021): the "normalized softmax" loss in both directions, summed:
``L = L_i2t + L_t2i`` (Sec. 3.2), on L2-normalised embeddings with a learnable temperature.

The paper's loss has no label smoothing; the HuggingFace port of the COYO reproduction uses 0.1
and averages the two directions, so both are options (``label_smoothing``, ``reduction``).
Positives come from ``item_id`` as for CLIP. Negatives are gathered across ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from modules.base import DualTowerModule, MethodConfig
from modules.losses.contrastive import align_loss
from modules.registry import METHODS
from modules.towers.output import TowerOutput

REDUCTIONS = ("sum", "mean")


@dataclass
class ALIGNConfig(MethodConfig):
    name: str = "align"
    label_smoothing: float = 0.0
    reduction: str = "sum"  # sum: the paper's L_i2t + L_t2i; mean: their average (as CLIP)
    chunk_elements: int | None = None  # as for clip: null chooses, 0 whole matrix, N tiles
    loss_weights: dict[str, float] = field(default_factory=lambda: {"align": 1.0})

    def __post_init__(self) -> None:
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {self.reduction!r}")
        if self.chunk_elements is not None and self.chunk_elements < 0:
            raise ValueError(f"chunk_elements: must be >= 0 or null, got {self.chunk_elements}")


@METHODS.register("align", ALIGNConfig)
class ALIGN(DualTowerModule):
    """Summed (or averaged) symmetric normalized-softmax loss of the data's pair."""

    loss_terms = ("align",)

    def losses(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, torch.Tensor]:
        a, b = (self.normalized(side, outputs[side]) for side in self.pair)
        cfg = self.method_cfg
        loss = align_loss(
            a,
            b,
            self.scale,
            ids=batch["item_id"],
            label_smoothing=cfg.label_smoothing,
            reduction=cfg.reduction,
            block_elements=cfg.chunk_elements,
        )
        self._last_loss = loss.detach()
        return {"align": loss}

    def scalars(self, outputs: dict[str, TowerOutput]) -> dict[str, torch.Tensor]:
        """With ``reduction: sum`` the loss is L_i2t + L_t2i, twice CLIP's; ``loss/mean_form``
        is (L_i2t + L_t2i) / 2, the value to compare with CLIP's loss."""
        if self.method_cfg.reduction != "sum":
            return {}
        return {"loss/mean_form": self._last_loss / 2}
