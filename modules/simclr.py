"""SimCLR (Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
ICML 2020): one encoder on two augmented views of each image, a projection MLP ``g``, and
NT-Xent (Eq. 1, modules/losses/simclr.py) on ``z = normalize(g(h))``.

The baseline of SwAV (modules/swav.py): the same tower, the same projection head, the same two
views; only the objective differs. Evaluation (k-NN, linear probe, class retrieval) reads the
representation ``h`` before the head, the tower's pooled output (``embedding`` is not
overridden), as in both papers; the head serves only the loss.

The projection head is the one of both official codes, ``Linear -> BatchNorm -> ReLU ->
Linear`` (SimCLR's ``proj_head_mode=nonlinear`` with BN; SwAV's ``projection_head``). Its
BatchNorm normalises over the *global* batch of the views that share an input size, as both
codes do (they run the crops of one resolution through the network as one concatenated batch,
with global / synchronised BN under data parallelism): :class:`GlobalBatchNorm1d` gathers the
rows of every rank, so two processes take exactly the one-process step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.base import AlignmentModule, MethodConfig, input_key, view_name
from modules.distributed import gather_with_grad, rank, world_size
from modules.losses.simclr import nt_xent_loss
from modules.registry import METHODS
from modules.towers.output import TowerOutput


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics are those of the rows of every rank (SimCLR's
    global BN, SwAV's SyncBatchNorm): the rows are gathered with gradient, normalised
    together, and each rank keeps its own. The running statistics (eval mode) are then the
    same on every rank."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        local = x.shape[0]
        return super().forward(gather_with_grad(x))[rank() * local : (rank() + 1) * local]


class ProjectionHead(nn.Sequential):
    """``Linear(dim, hidden) -> BatchNorm (global) -> ReLU -> Linear(hidden, out)``."""

    def __init__(self, dim: int, hidden: int, out: int) -> None:
        super().__init__(
            nn.Linear(dim, hidden), GlobalBatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out)
        )


def projected_views(
    module: AlignmentModule,
    head: nn.Module,
    batch: dict[str, Any],
    outputs: dict[str, TowerOutput],
    views: Sequence[int],
) -> list[Tensor]:
    """``normalize(head(h_v))`` of each view ``v`` of the module's single encoder, in the order
    of ``views``. The views of one input size go through the head as one batch (one BatchNorm
    batch, as the official codes concatenate the crops of one resolution)."""
    name = module.modalities[0]
    key = input_key(module.towers[name])
    groups: dict[tuple[int, ...], list[int]] = {}
    for v in views:
        groups.setdefault(tuple(batch[view_name(key, v)].shape[1:]), []).append(v)
    projected: dict[int, Tensor] = {}
    for members in groups.values():
        pooled = torch.cat([module.embedding(name, outputs[view_name(name, v)]) for v in members])
        z = F.normalize(head(pooled), dim=-1)
        projected |= dict(zip(members, z.chunk(len(members)), strict=True))
    return [projected[v] for v in views]


def projection_outputs(
    module: AlignmentModule, head: nn.Module, outputs: dict[str, TowerOutput]
) -> dict[str, Tensor]:
    """``projection/<modality>``: ``normalize(head(h))`` of the plain evaluation input, the space
    the loss compares (``uniformity_tolerance`` measures it there too, besides on ``h``)."""
    name = module.modalities[0]
    return {f"projection/{name}": F.normalize(head(module.embedding(name, outputs[name])), dim=-1)}


def check_views(module: AlignmentModule, needed: int, exact: bool) -> int:
    """The number of training views of the module's encoder, checked against ``needed``
    (at least, or exactly)."""
    name = module.modalities[0]
    views = module.views.get(name, 0)
    if views < needed or (exact and views != needed):
        wanted = f"exactly {needed}" if exact else f"at least {needed}"
        raise ValueError(
            f"{module.method_cfg.name} needs {wanted} training views of {name!r}, the data has "
            f"{views} (data.views, data.small_views)"
        )
    return views


@dataclass
class SimCLRConfig(MethodConfig):
    """``head_hidden``, ``head_dim``: the projection MLP's widths (the paper: 2048 -> 128 on a
    2048-d ResNet-50 representation). The temperature is ``model.temperature`` (fixed:
    ``model.learnable_temperature: false``)."""

    name: str = "simclr"
    head_hidden: int = 512
    head_dim: int = 128
    loss_weights: dict[str, float] = field(default_factory=lambda: {"nt_xent": 1.0})

    def __post_init__(self) -> None:
        if min(self.head_hidden, self.head_dim) < 1:
            raise ValueError(f"head widths must be positive: {self.head_hidden}, {self.head_dim}")


@METHODS.register("simclr", SimCLRConfig)
class SimCLR(AlignmentModule):
    """NT-Xent between ``normalize(g(h))`` of the two views ``image@0``, ``image@1``;
    ``embedding`` (what every evaluator reads) is ``h``, before the head."""

    loss_terms = ("nt_xent",)
    num_encoders = 1
    loss_on_eval = False  # evaluation batches carry the plain image, no views

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg: SimCLRConfig = self.method_cfg
        check_views(self, 2, exact=True)
        self.head = ProjectionHead(
            self.hparams["model"]["embed_dim"], cfg.head_hidden, cfg.head_dim
        )

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        a, b = projected_views(self, self.head, batch, outputs, (0, 1))
        return {"nt_xent": nt_xent_loss(a, b, self.scale)}

    def eval_outputs(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, Tensor]:
        return projection_outputs(self, self.head, outputs)
