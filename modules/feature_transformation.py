"""FT (Zhu et al., "Improving Contrastive Learning by Visualizing Feature Transformation", ICCV
2021) on MoCo v2 (He et al., CVPR 2020; Chen et al., 2020): one encoder, two augmented views,
a momentum (EMA) copy of the encoder that makes the keys, a queue of past keys as negatives, and
FT's positive extrapolation and negative interpolation in the logits
(modules/losses/feature_transformation.py).

Per training step, as the official code (``DTennant/CL-Visualizing-Feature-Transformation``:
``learning/contrast_trainer.py`` ``_train_moco``, ``memory/mem_moco.py``
``RGBMoCo_dropmix_norm``) does it:

1. query ``q = normalize(g(f(x_0)))`` of view 0 through the online tower ``f`` and MLP head
   ``g``; key ``k = normalize(g'(f'(x_1)))`` of view 1 through the momentum copy, no gradient
   (one direction, not symmetrised, as both MoCo v2 and FT's code);
2. the momentum copy follows ``theta' <- m theta' + (1 - m) theta``; here just before the keys
   are made (MoCo's ``builder.py`` order), which is the same sequence as FT's update after the
   optimiser step;
3. ``lambda``, ``mu`` and the queue permutation, one draw per step from a generator seeded by
   the run's ``mix_seed`` and the step counter (both buffers, so a resumed run and every rank
   draw alike; ``mix_seed`` is drawn at construction from the RNG the stage seeds with the
   experiment's ``seed``);
4. loss ``CE([q^ . k^, q^ . Q^^T] / tau, 0)``; then the *un-mixed* keys of every rank
   (``gather_no_grad``) replace the oldest queue rows, and the step counter advances.

``method.positive_extrapolation: false method.negative_interpolation: false`` is plain MoCo v2,
the paper's baseline (one override each).

Choices (the platform's, said here):

- **Head**: MoCo v2's and FT's ``mlp`` head, ``Linear(d, d) -> ReLU -> Linear(d, 128)`` with no
  BatchNorm (``networks/build_backbone.py``), not SimCLR's ``ProjectionHead``: with a queue, a
  BatchNorm in the key encoder lets the positive key share the current batch's statistics that
  the queued negatives lack (MoCo, Sec. 3.3, the reason MoCo shuffles BN). The platform's CNN
  tower uses GroupNorm, so the key encoder has no BatchNorm at all: **neither shuffling BN nor
  global BN is needed**, nothing leaks across samples, and two processes take exactly the
  one-process step. (``projected_views`` and ``check_views`` are SimCLR's.)
- The momentum copy runs in eval mode (FT's code: ``model_ema.eval()``, BatchNorm aside), so a
  tower with dropout makes deterministic keys.
- Evaluation (k-NN, linear probe) reads the online tower's pooled output ``h`` before the head,
  as MoCo's linear protocol does on ``encoder_q``.
- The queue starts as random unit vectors, as the official code's.

Scoped down: the queue length and momentum are the YAML's (experiments/feature_transformation.yaml
scales them to the data and the run); the optimiser is the platform's AdamW, as for SimCLR.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.base import AlignmentModule, FitContext, MethodConfig, input_key, view_name
from modules.distributed import gather_no_grad
from modules.losses.feature_transformation import draw_transformation, feature_transformation_loss
from modules.registry import METHODS
from modules.simclr import check_views, projected_views, projection_outputs
from modules.towers.output import TowerOutput


def moco_head(dim: int, hidden: int, out: int) -> nn.Sequential:
    """MoCo v2's projection MLP: ``Linear(dim, hidden) -> ReLU -> Linear(hidden, out)``."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, out))


@dataclass
class FeatureTransformationConfig(MethodConfig):
    """``queue_size``: keys in the queue (paper: 65 536); ``momentum``: the key encoder's EMA
    coefficient (paper: 0.999); ``positive_extrapolation`` with ``alpha_p`` (lambda = 1 +
    Beta(alpha_p, alpha_p), paper 2.0); ``negative_interpolation`` with ``alpha_n`` (mu ~
    Beta(alpha_n, alpha_n), paper 1.6); ``head_hidden`` / ``head_dim``: the MLP head's widths
    (MoCo v2: the representation's width, then 128). The temperature is ``model.temperature``
    (MoCo v2: 0.2, fixed)."""

    name: str = "feature_transformation"
    queue_size: int = 65536
    momentum: float = 0.999
    positive_extrapolation: bool = True
    negative_interpolation: bool = True
    alpha_p: float = 2.0
    alpha_n: float = 1.6
    head_hidden: int = 128
    head_dim: int = 128
    loss_weights: dict[str, float] = field(default_factory=lambda: {"moco": 1.0})

    def __post_init__(self) -> None:
        if self.queue_size < 1:
            raise ValueError(f"queue_size: must be positive, got {self.queue_size}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum: must be in [0, 1), got {self.momentum}")
        if self.alpha_p <= 0:
            raise ValueError(f"alpha_p: must be positive, got {self.alpha_p}")
        if self.alpha_n <= 0:
            raise ValueError(f"alpha_n: must be positive, got {self.alpha_n}")
        if min(self.head_hidden, self.head_dim) < 1:
            raise ValueError(
                f"head_hidden, head_dim: must be positive, got {self.head_hidden}, {self.head_dim}"
            )


@METHODS.register("feature_transformation", FeatureTransformationConfig)
class FeatureTransformation(AlignmentModule):
    """MoCo v2 + FT: query of ``image@0``, momentum key of ``image@1``, a queue of past keys;
    ``embedding`` (what every evaluator reads) is the online tower's ``h``, before the head."""

    loss_terms = ("moco",)
    num_encoders = 1
    loss_on_eval = False  # evaluation batches carry the plain image, no views

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg: FeatureTransformationConfig = self.method_cfg
        check_views(self, 2, exact=True)
        self.head = moco_head(self.hparams["model"]["embed_dim"], cfg.head_hidden, cfg.head_dim)
        #: The key encoder: an EMA copy of the tower and head, never touched by the optimiser.
        self.momentum_encoder = nn.ModuleDict(
            {
                "tower": copy.deepcopy(self.towers[self.modalities[0]]),
                "head": copy.deepcopy(self.head),
            }
        ).requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(cfg.queue_size, cfg.head_dim), dim=1))
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("mix_seed", torch.randint(0, 2**62, ()))
        self.last_scores: dict[str, Tensor] = {}

    def encode(self, batch: dict[str, Any]) -> dict[str, TowerOutput]:
        """The online tower on the plain input and on view 0 only (view 1 is the key's, made by
        the momentum copy in ``losses``)."""
        key_view = view_name(input_key(self.towers[self.modalities[0]]), 1)
        return self.encode_with(self.towers, {k: v for k, v in batch.items() if k != key_view})

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        cfg: FeatureTransformationConfig = self.method_cfg
        (q,) = projected_views(self, self.head, batch, outputs, (0,))
        self.momentum_update()
        k = self.keys(batch)
        draw = draw_transformation(
            int(self.mix_seed),
            int(self.steps),
            cfg.queue_size,
            cfg.alpha_p if cfg.positive_extrapolation else None,
            cfg.alpha_n if cfg.negative_interpolation else None,
        )
        loss = feature_transformation_loss(q, k, self.queue.clone(), self.scale, draw)
        self.last_scores = {  # the paper's pos / neg scores (cosines before any mixing)
            "ft/pos_score": (q * k).sum(dim=1).mean().detach(),
            "ft/neg_score": (q @ self.queue.T).mean().detach(),
        }
        self.enqueue(gather_no_grad(k))
        self.steps += 1
        return {"moco": loss}

    def eval_outputs(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, Tensor]:
        return projection_outputs(self, self.head, outputs)

    def scalars(self, outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        """The last step's mean positive and negative cosine (un-mixed q, k and queue)."""
        return dict(self.last_scores)

    def prepare_fit(self, ctx: FitContext) -> None:
        """Before the first step, the key encoder starts as the online one (which ``init_from``
        may have replaced since construction); a resumed run's checkpoint overwrites it."""
        super().prepare_fit(ctx)
        if int(self.steps) == 0:
            self.momentum_update(momentum=0.0)

    @torch.no_grad()
    def momentum_update(self, momentum: float | None = None) -> None:
        """``theta' <- m theta' + (1 - m) theta`` over the tower's and the head's parameters."""
        m = self.method_cfg.momentum if momentum is None else momentum
        online = [*self.towers[self.modalities[0]].parameters(), *self.head.parameters()]
        for target, source in zip(self.momentum_encoder.parameters(), online, strict=True):
            target.mul_(m).add_(source.detach(), alpha=1.0 - m)

    @torch.no_grad()
    def keys(self, batch: dict[str, Any]) -> Tensor:
        """``normalize(g'(f'(x_1)))``: view 1 through the momentum copy, in eval mode."""
        name = self.modalities[0]
        key = input_key(self.towers[name])
        self.momentum_encoder.eval()
        out = self.momentum_encoder["tower"]({key: batch[view_name(key, 1)]})
        return F.normalize(self.momentum_encoder["head"](self.embedding(name, out)), dim=-1)

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """The oldest queue rows replaced by ``keys`` (a ring; the newest ``queue_size`` keys
        when more arrive at once)."""
        size = self.queue.shape[0]
        keys = keys[-size:].to(self.queue.dtype)
        rows = (self.queue_pointer + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue.index_copy_(0, rows, keys)
        self.queue_pointer.copy_((self.queue_pointer + keys.shape[0]) % size)
