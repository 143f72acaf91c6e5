"""CWCL (Srinivasa et al., "CWCL: Cross-Modal Transfer with Continuously Weighted Contrastive
Loss", NeurIPS 2023): cross-modal transfer from a frozen pretrained tower.

One tower V (``reference``, default ``image``) is pretrained and frozen (``model.frozen``); the
other, U, is trained to align with it (LiT-like for image-text). Plain InfoNCE treats every
non-paired sample as an equally wrong negative; CWCL instead weights every column j of row i by
how similar the two samples are according to the frozen tower,
``w_ij = 1/2 <q_i, q_j> + 1/2``, and uses the row-normalised weights as soft targets
(modules/losses/cwcl.py). Images that the pretrained image tower finds similar thus become
partial positives of each other's captions.

Choices (the paper's code is not public; methods/part1.md Sec. 26 ⚠):
- both directions weighted by the same ``w`` by default ("analogous" in the paper's Eq.);
  ``reference_to_trained: one_hot`` or ``trained_to_reference: one_hot`` gives plain
  InfoNCE in that direction (CellCLIP weights the reference rows only).
- the temperature is the platform's (``model.temperature``, learnable unless
  ``model.learnable_temperature: false``).
- one-hot directions take their positives from ``item_id`` like CLIP; the continuous weights
  of two rows of one item are 1 already (same reference embedding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from modules.base import DualTowerModule, MethodConfig
from modules.losses.cwcl import TARGETS, cwcl_loss
from modules.registry import METHODS
from modules.towers.output import TowerOutput


@dataclass
class CWCLConfig(MethodConfig):
    name: str = "cwcl"
    # the frozen pretrained tower whose own similarities give the weights (must be in
    # model.frozen); the other tower of the pair is the trained one
    reference: str = "image"
    # targets of the rows of the trained tower (L_{U->V}) and of the reference tower (L_{V->U})
    trained_to_reference: str = "continuous"
    reference_to_trained: str = "continuous"
    loss_weights: dict[str, float] = field(default_factory=lambda: {"cwcl": 1.0})

    def __post_init__(self) -> None:
        for name in ("trained_to_reference", "reference_to_trained"):
            if getattr(self, name) not in TARGETS:
                raise ValueError(f"{name}: must be one of {TARGETS}, got {getattr(self, name)!r}")


@METHODS.register("cwcl", CWCLConfig)
class CWCL(DualTowerModule):
    """Trained tower U against the frozen reference tower V with continuously weighted targets."""

    loss_terms = ("cwcl",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        reference = self.method_cfg.reference
        if reference not in self.pair:
            raise ValueError(
                f"method.reference: {reference!r} is not one of this data's towers "
                f"{list(self.pair)}"
            )
        if reference not in self.frozen:
            raise ValueError(
                f"method.reference: CWCL's reference tower {reference!r} must be frozen "
                f"(model.frozen: [{reference}])"
            )
        self.trained_side = next(side for side in self.pair if side != reference)

    def losses(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, torch.Tensor]:
        p, q = (
            self.normalized(side, outputs[side])
            for side in (self.trained_side, self.method_cfg.reference)
        )
        loss = cwcl_loss(
            p,
            q,
            self.scale,
            ids=batch["item_id"],
            trained_to_reference=self.method_cfg.trained_to_reference,
            reference_to_trained=self.method_cfg.reference_to_trained,
        )
        return {"cwcl": loss}
