"""SwAV (Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments", NeurIPS 2020; methods/part1.md Sec. 30): one encoder on V augmented views, a
projection head, prototypes ``C`` and the swapped prediction of Sinkhorn codes (Eq. 2-3,
modules/losses/swav.py) on ``z = normalize(g(h))``.

The training loop of the official ``main_swav.py``, as far as it concerns the method:

- prototypes ``C`` [K, 128]: ``nn.Linear(128, K, bias=False)``, rows L2-normalised under
  ``no_grad`` before every step (here at the start of :meth:`SwAV.losses`, in place, so the
  weights the optimiser updates are the normalised ones, as in the official loop);
- frozen for the first ``freeze_prototypes_steps`` optimiser steps (official
  ``freeze_prototypes_niters`` = 313, one ImageNet epoch at batch 4096, where it sets
  ``p.grad = None``): here the loss reads ``C`` with a zero gradient while frozen. The
  parameter stays in the graph (DDP expects every parameter to get a gradient), Adam's moments
  stay 0 so the update is exactly 0, and AdamW's decoupled weight decay only rescales ``C``,
  which the next normalisation undoes: the normalised prototypes do not move;
- codes from the large crops only (``code_views``, the official ``crops_for_assign = [0, 1]``);
  multi-crop small views (``data.small_views``) only predict;
- temperature ``tau = model.temperature`` (0.1 in experiments/swav.yaml, fixed), Sinkhorn
  ``epsilon`` 0.05 and 3 iterations over the global batch.

Scoped down: no queue (the official code adds one for batches of 256 from epoch 15, so that
the Sinkhorn sees 4096 samples for K = 3000, 1.4 per prototype; experiments/swav.yaml's batch
of 256 with K = 128 has 2 per prototype without it), AdamW instead of LARS. The head and its
global BatchNorm are SimCLR's (modules/simclr.py): the comparison with the SimCLR baseline
changes only the objective. Evaluation reads ``h``, the tower's pooled output before the head
(``embedding`` is not overridden).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.base import AlignmentModule, MethodConfig
from modules.losses.swav import swav_loss
from modules.registry import METHODS
from modules.simclr import ProjectionHead, check_views, projected_views, projection_outputs
from modules.towers.output import TowerOutput


@dataclass
class SwAVConfig(MethodConfig):
    """``num_prototypes`` K (official 3000 for ImageNet's 1000 classes); ``code_views``: the
    views that get codes (the two full-size views); ``freeze_prototypes_steps``: optimiser
    steps with frozen prototypes (official 313, one epoch); ``head_hidden``, ``head_dim``: the
    projection MLP (official 2048 -> 128)."""

    name: str = "swav"
    num_prototypes: int = 3000
    code_views: list[int] = field(default_factory=lambda: [0, 1])
    epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    freeze_prototypes_steps: int = 313
    head_hidden: int = 512
    head_dim: int = 128
    loss_weights: dict[str, float] = field(default_factory=lambda: {"swav": 1.0})

    def __post_init__(self) -> None:
        if self.num_prototypes < 2:
            raise ValueError(f"num_prototypes: need at least 2, got {self.num_prototypes}")
        if not self.code_views or len(set(self.code_views)) < len(self.code_views):
            raise ValueError(f"code_views: distinct view indices, got {self.code_views}")
        if self.epsilon <= 0 or self.sinkhorn_iterations < 1:
            raise ValueError("epsilon > 0 and sinkhorn_iterations >= 1")
        if self.freeze_prototypes_steps < 0:
            raise ValueError(f"freeze_prototypes_steps: >= 0, got {self.freeze_prototypes_steps}")
        if min(self.head_hidden, self.head_dim) < 1:
            raise ValueError(f"head widths must be positive: {self.head_hidden}, {self.head_dim}")


def zero_gradient(x: Tensor) -> Tensor:
    """``x``'s value with a zero gradient, ``x`` still in the autograd graph."""
    return x.detach() + 0.0 * x


@METHODS.register("swav", SwAVConfig)
class SwAV(AlignmentModule):
    """Swapped prediction over all views of ``image`` (``image@0`` ...), codes from
    ``code_views``; ``embedding`` (what every evaluator reads) is ``h``, before the head."""

    loss_terms = ("swav",)
    num_encoders = 1
    loss_on_eval = False  # evaluation batches carry the plain image, no views

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg: SwAVConfig = self.method_cfg
        views = check_views(self, 2, exact=False)
        if max(cfg.code_views) >= views:
            raise ValueError(f"method.code_views {cfg.code_views}: the data has {views} views")
        self.head = ProjectionHead(
            self.hparams["model"]["embed_dim"], cfg.head_hidden, cfg.head_dim
        )
        self.prototypes = nn.Linear(cfg.head_dim, cfg.num_prototypes, bias=False)

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        """Eq. 3 over every view, after normalising the prototypes (and freezing them for the
        first ``freeze_prototypes_steps`` steps)."""
        cfg: SwAVConfig = self.method_cfg
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        prototypes = self.prototypes.weight
        if self.global_step < cfg.freeze_prototypes_steps:
            prototypes = zero_gradient(prototypes)
        views = projected_views(
            self, self.head, batch, outputs, range(self.views[self.modalities[0]])
        )
        loss = swav_loss(
            views,
            prototypes,
            cfg.code_views,
            temperature=1.0 / self.scale,
            epsilon=cfg.epsilon,
            iterations=cfg.sinkhorn_iterations,
        )
        return {"swav": loss}

    def eval_outputs(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, Tensor]:
        return projection_outputs(self, self.head, outputs)
