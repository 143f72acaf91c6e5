"""MV-InfoNCE and MV-DHEL (Koromilas et al., "Principled Multi-View Contrastive Learning",
arXiv 2025; methods/part1.md Sec. 33): one encoder on K >= 2 augmented views of each image
(``data.views: K``), SimCLR's projection head ``g``, and one loss term per item over all of
its views (modules/losses/multi_view.py) on ``z = normalize(g(h))``.

- ``mv_infonce``: every view pair of an item in one numerator, every other embedding of every
  view in the denominator (the paper's first principled extension of InfoNCE to K views).
- ``mv_dhel``: the same numerator over the product of per-view denominators (uniformity within
  each view, alignment and uniformity decoupled).
- ``method.pairwise: true`` (either name): the baseline the paper compares with, the two-view
  loss averaged over the K(K-1)/2 view pairs (NT-Xent for ``mv_infonce``, DHEL for
  ``mv_dhel``; the official ``pwe=True``). With K = 2 it is the multi-view loss for DHEL and
  SimCLR's NT-Xent for InfoNCE. The loss term is then logged as ``pairwise_nt_xent`` /
  ``pairwise_dhel``.

The tower, head (``Linear -> global BatchNorm -> ReLU -> Linear``), the head's one BatchNorm
batch over all views and the evaluation on ``h`` before the head are SimCLR's
(modules/simclr.py), so that against experiments/simclr.yaml only the objective and the number
of views change. Scoped down against the official CIFAR config (ResNet-18, batch 256, tau 0.5,
~200 epochs, SGD lr 1.0 warm-up-anneal, wd 1e-6): the platform's small CNN and AdamW, a few
epochs on shapes_views; tau = 0.5 (``model.temperature``, fixed) is the paper's CIFAR value.
MV-DHEL's value grows with K (a sum of K log-denominators), as in the official code; AdamW's
step is invariant to the loss's scale up to its epsilon, so K needs no learning-rate change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor

from modules.base import AlignmentModule, MethodConfig
from modules.losses.multi_view import (
    mv_dhel_loss,
    mv_infonce_loss,
    pairwise_dhel_loss,
    pairwise_nt_xent_loss,
)
from modules.registry import METHODS
from modules.simclr import ProjectionHead, check_views, projected_views, projection_outputs
from modules.towers.output import TowerOutput

Loss = Callable[[Sequence[Tensor], Tensor | float], Tensor]


@dataclass
class MultiViewConfig(MethodConfig):
    """``pairwise``: train with the pairwise-average baseline instead (see the module
    docstring); ``head_hidden``, ``head_dim``: the projection MLP (SimCLR's)."""

    name: str = "mv_infonce"
    pairwise: bool = False
    head_hidden: int = 512
    head_dim: int = 128
    loss_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if min(self.head_hidden, self.head_dim) < 1:
            raise ValueError(f"head widths must be positive: {self.head_hidden}, {self.head_dim}")


class MultiViewContrastive(AlignmentModule):
    """One encoder, all ``K`` views of ``image`` through the head, one multi-view loss;
    ``embedding`` (what every evaluator reads) is ``h``, before the head."""

    #: The multi-view loss and its pairwise-average baseline (subclasses).
    multi_view_loss: ClassVar[Loss]
    pairwise_loss: ClassVar[Loss]
    num_encoders = 1
    loss_on_eval = False  # evaluation batches carry the plain image, no views

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg: MultiViewConfig = self.method_cfg
        check_views(self, 2, exact=False)
        self.head = ProjectionHead(
            self.hparams["model"]["embed_dim"], cfg.head_hidden, cfg.head_dim
        )

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        views = projected_views(
            self, self.head, batch, outputs, range(self.views[self.modalities[0]])
        )
        multi, pairwise = self.loss_terms
        if self.method_cfg.pairwise:
            return {pairwise: self.pairwise_loss(views, self.scale)}
        return {multi: self.multi_view_loss(views, self.scale)}

    def eval_outputs(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, Tensor]:
        return projection_outputs(self, self.head, outputs)


@METHODS.register("mv_infonce", MultiViewConfig)
class MVInfoNCE(MultiViewContrastive):
    """MV-InfoNCE (or, with ``method.pairwise``, NT-Xent averaged over the view pairs)."""

    loss_terms = ("mv_infonce", "pairwise_nt_xent")
    multi_view_loss = staticmethod(mv_infonce_loss)
    pairwise_loss = staticmethod(pairwise_nt_xent_loss)


@dataclass
class MVDHELConfig(MultiViewConfig):
    name: str = "mv_dhel"


@METHODS.register("mv_dhel", MVDHELConfig)
class MVDHEL(MultiViewContrastive):
    """MV-DHEL (or, with ``method.pairwise``, DHEL averaged over the view pairs)."""

    loss_terms = ("mv_dhel", "pairwise_dhel")
    multi_view_loss = staticmethod(mv_dhel_loss)
    pairwise_loss = staticmethod(pairwise_dhel_loss)
