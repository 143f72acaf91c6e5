"""SupReMix: supervised contrastive regression with mixed hard pairs (Wu, Dong, Chen, Zhou and
Zhou, "Mixup Your Own Pairs", arXiv 2309.16633; methods/part1.md section 32), after the
official training script of yilei-wu/SupReMix (``train_supremix.py``, ``supremix_loss.py``; see
modules/losses/supremix.py for the loss, its sources and the ⚠ choices).

The paper's recipe, followed here, is two-stage: contrastive pre-training of the encoder with
SupReMix on two augmented views, then a linear probe (a linear regressor trained with L1 on the
frozen encoder's features, ``train_linear.py``). One module serves both stages of
experiments/supremix.yaml:

    pre-training  L = L_SupReMix(normalize(g(h(v0))), normalize(g(h(v1))), y)
                  (``loss_weights: {regression: 0, supremix: 1}``, the default)
    linear probe  L = mean_i |head(h(x_i)) - y_i|, h frozen (``model.frozen: [image]``,
                  ``loss_weights: {regression: 1, supremix: 0}``, ``init_from`` pre-training)

with ``h`` the tower's pooled embedding (what the probe and every evaluator read), ``g`` a
projection MLP (the official ``--use_proj --projector_dim 128``; SimCLR's
:class:`~modules.simclr.ProjectionHead`, its hidden width ``head_hidden``), ``x`` the plain
training image and ``v0``, ``v1`` its two size-preserving views (the shapes_sizes family's, as
for ConR). A stage encodes only what its non-zero terms read: the views when SupReMix is on, the
plain image when the regression is on. Both terms on, without a frozen tower, is the joint
variant (L1 + beta SupReMix, ConR's form); not the paper's.

Details and their source:

- tau = 0.3 (the script's default), fixed: ``model.temperature`` with
  ``model.learnable_temperature: false``, as ConR's.
- the anchor-inclusive mixing weights: Beta(2, 8) draws (the script's ``--beta 0``), one per
  (anchor, candidate), drawn with torch's generator on each rank for its own anchors
  (``mix_alpha`` fixes them instead: a deterministic variant for checks).
- n = 5 target units (``--n 5``; the sizes here are pixels, as ConR's omega = 1 px stands for
  1 year of age), distance weights ``1 + |dy|`` (``--use_weight``, ``L1_inv``).
- the probe: a linear regressor trained with L1 on the frozen tower, which stays in eval mode
  (base class: its BatchNorm statistics are the pre-training's). The official
  ``train_linear.py`` is not in the code index (⚠ its optimiser and epochs unknown); the probe's
  lr is chosen on validation (experiments/supremix.yaml).
- evaluation batches carry no views, and in the pre-training stage the regressor is not
  trained: ``loss_on_eval`` is False and the pre-training stage's regression metrics are those
  of an untrained head (read the probe stage's).

Scoped down: a small CNN from scratch instead of ResNet-50, the platform's optimiser and budget
(experiments/supremix.yaml says how); no ``pool`` sub-batching (it only splits the official
batch to fit the mixture tensor in memory, which this loss never builds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from modules.base import AlignmentModule, MethodConfig, input_key, view_name
from modules.distributed import world_size
from modules.losses.supremix import supremix_loss
from modules.registry import METHODS
from modules.simclr import ProjectionHead, check_views, projected_views
from modules.towers.output import TowerOutput


@dataclass
class SupReMixConfig(MethodConfig):
    """SupReMix's hyper-parameters (official defaults of ``train_supremix.py``)."""

    name: str = "supremix"
    target: str = "size"  # the batch's ``target/<target>`` to regress
    window: float = 5.0  # n: hard positives mix labels within n below and above the anchor's
    beta_a: float = 2.0  # anchor-inclusive mixing weight ~ Beta(beta_a, beta_b)
    beta_b: float = 8.0
    mix_alpha: float | None = None  # a fixed anchor weight instead of the Beta draws
    distance_weight: bool = True  # the 1 + |dy| weights of the denominator (L1_inv)
    mix_negatives: bool = True  # anchor-inclusive hard negatives
    mix_positives: bool = True  # anchor-exclusive hard positives
    head_hidden: int = 512  # projection MLP widths (the official projector_dim is 128)
    head_dim: int = 128
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"regression": 0.0, "supremix": 1.0}
    )

    def __post_init__(self) -> None:
        if self.window <= 0:
            raise ValueError(f"window must be > 0, got {self.window}")
        if min(self.beta_a, self.beta_b) <= 0:
            raise ValueError(f"beta_a, beta_b must be > 0, got {self.beta_a}, {self.beta_b}")
        if self.mix_alpha is not None and not 0.0 <= self.mix_alpha <= 1.0:
            raise ValueError(f"mix_alpha must be in [0, 1] or null, got {self.mix_alpha}")
        if min(self.head_hidden, self.head_dim) < 1:
            raise ValueError(
                f"head_hidden, head_dim must be positive: {self.head_hidden}, {self.head_dim}"
            )


@METHODS.register("supremix", SupReMixConfig)
class SupReMix(AlignmentModule):
    """One encoder, a projection MLP for SupReMix and a linear regressor (the probe)."""

    num_encoders = 1
    loss_terms = ("regression", "supremix")
    loss_on_eval = False  # evaluation batches carry no views; the regressor may be untrained
    deterministic_overrides = {"mix_alpha": 0.2}  # the mean of Beta(2, 8)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg: SupReMixConfig = self.method_cfg
        if self.temperature.log_scale.requires_grad:
            raise ValueError(
                "supremix: the temperature is fixed (0.3 officially); set "
                "model.learnable_temperature: false (model.temperature is SupReMix's tau)"
            )
        (self.modality,) = self.modalities
        if self.active("supremix"):
            check_views(self, 2, exact=False)
        embed_dim = self.hparams["model"]["embed_dim"]
        self.projection = ProjectionHead(embed_dim, cfg.head_hidden, cfg.head_dim)
        self.head = nn.Linear(embed_dim, 1)
        # a stage trains only what its active terms read (DDP refuses unused parameters)
        self.projection.requires_grad_(self.active("supremix"))
        self.head.requires_grad_(self.active("regression"))

    def active(self, term: str) -> bool:
        """Whether ``term`` enters the training loss (non-zero weight)."""
        return bool(self.method_cfg.loss_weights.get(term, 1.0))

    def encode(self, batch: dict[str, Any]) -> dict[str, TowerOutput]:
        """In training, only what the active terms read: the views for SupReMix, the plain
        image for the regression; evaluation encodes the plain image."""
        if not self.training:
            return super().encode(batch)
        key = input_key(self.towers[self.modality])
        views = {view_name(key, v) for v in range(self.views.get(self.modality, 0))}
        skip = set() if self.active("supremix") else views
        if not self.active("regression"):
            skip.add(key)
        return super().encode({k: v for k, v in batch.items() if k not in skip})

    def predict(self, output: TowerOutput) -> Tensor:
        """The linear regressor on the encoder's embedding: [B]."""
        return self.head(self.embedding(self.modality, output)).squeeze(-1)

    def anchor_weights(self, rows: int, like: Tensor) -> Tensor:
        """The anchor's weight in each anchor-inclusive mixture: [rows, world * rows]."""
        cfg: SupReMixConfig = self.method_cfg
        shape = (rows, world_size() * rows)
        if cfg.mix_alpha is not None:
            return torch.full(shape, cfg.mix_alpha, dtype=like.dtype, device=like.device)
        beta = torch.distributions.Beta(
            torch.tensor(cfg.beta_a, device=like.device),
            torch.tensor(cfg.beta_b, device=like.device),
        )
        return beta.sample(shape).to(like.dtype)

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        """``regression``: L1 of the regressor on the plain image; ``supremix``: SupReMix on the
        two views' projected embeddings (both only where their inputs were encoded)."""
        cfg: SupReMixConfig = self.method_cfg
        targets = batch[f"target/{cfg.target}"].float()
        terms: dict[str, Tensor] = {}
        if self.modality in outputs:
            error = self.predict(outputs[self.modality]) - targets.to(self.head.weight.dtype)
            terms["regression"] = error.abs().mean()
        if all(view_name(self.modality, v) in outputs for v in (0, 1)):
            z0, z1 = projected_views(self, self.projection, batch, outputs, (0, 1))
            features = torch.cat([z0, z1])
            terms["supremix"] = supremix_loss(
                features,
                targets.repeat(2).to(features.dtype),
                self.anchor_weights(features.shape[0], features),
                temperature=float(1 / self.scale),
                window=cfg.window,
                distance_weight=cfg.distance_weight,
                mix_negatives=cfg.mix_negatives,
                mix_positives=cfg.mix_positives,
            )
        return terms

    def evaluators(self) -> dict[str, dict[str, Any]]:
        """MAE / GM overall and by shot region of the target (``regression`` evaluator)."""
        return {"regression": {"targets": [self.method_cfg.target]}}

    def eval_outputs(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, Tensor]:
        """The regressor's predictions on the plain (evaluation) images."""
        return {f"prediction/{self.method_cfg.target}": self.predict(outputs[self.modality])}
