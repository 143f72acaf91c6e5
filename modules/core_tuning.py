"""Core-tuning, contrast-regularised fine-tuning of a contrastively pre-trained encoder (Zhang,
Hooi, Hu, Liang & Feng, NeurIPS 2021; methods/part2.md Sec. 62; official ``Vanint/Core-tuning``).

Fine-tuning a contrastive self-supervised model with cross-entropy alone leaves its classes
scattered; Core-tuning adds a focal supervised contrastive term on hard pairs mined in feature
space, and smooths the decision boundary by training the classifier on the mixtures too:

    L = CE_soft(W [f; f'; f''], [y; y'; y'']) + eta * FocalSupCon(g([f; f'; f'']), ids(y)),

with ``f`` the backbone's features (the tower's pooled output, what every evaluator reads),
``f'`` / ``f''`` the hard negatives / positives of modules/losses/core_tuning.py, ``W`` a
linear classifier without bias, ``g`` the contrastor ``Linear(d, d) -> ReLU -> Linear(d, d_c)
-> normalise`` and ``ids`` the classes of the soft labels (identical mixtures are positives).
``hard_pair_mining: false`` trains on ``[f]`` alone, and with ``loss_weights.focal_supcon: 0``
as well it is plain cross-entropy fine-tuning ("CE-tuning"), the paper's baseline.

The pre-trained encoder comes from an earlier stage (``init_from``; experiments/core_tuning.yaml
chains SimCLR pre-training on the same scenes, as the paper starts from MoCo-v2). The head's
logits on the plain evaluation image are logged by the ``classifier`` evaluator
(``<split>/classifier/image/<task>/accuracy``).

Followed (official code): eta = 0.1 (the README's CIFAR-10 command; the argparse default is
10), mixup alpha 1, tau 0.07 (base 0.07), contrastor width 256, the classifier without bias,
the negative mix clamped at 0.8; ``supcon_average: positives`` is the paper's 1/|P(i)|, and
``columns`` the code's mean over every column. Scoped down: the small CNN tower and SimCLR
instead of ResNet-50 and MoCo-v2, AdamW with the platform's cosine schedule instead of SGD
(Nesterov, lr 0.01), the method's choices in modules/losses/core_tuning.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.base import AlignmentModule, MethodConfig, view_name
from modules.distributed import gather_no_grad, gather_with_grad, rank
from modules.losses.core_tuning import (
    hard_pair_mixtures,
    mixing_draws,
    soft_cross_entropy,
    soft_label_ids,
)
from modules.losses.supcon import supcon_loss
from modules.registry import METHODS
from modules.simclr import check_views
from modules.towers.output import TowerOutput

_MIXING = 62  # salt of the mining's random draws
#: The code's fixed ``base_temperature``: the loss is scaled by ``temperature / 0.07`` (1 at the
#: default tau), as the official ``focal_SupConLoss`` would be if its tau were changed.
OFFICIAL_BASE_TEMPERATURE = 0.07


@dataclass
class CoreTuningConfig(MethodConfig):
    """``task``: the label fine-tuned on (``label/<task>``); ``contrast_dim``: the contrastor's
    output width; ``mixup_alpha``: the Beta parameter of both mixtures; ``temperature``: the
    focal SupCon's tau; ``supcon_average``: ``positives`` (paper) or ``columns`` (code);
    ``hard_pair_mining``: false trains on the un-mixed features only."""

    name: str = "core_tuning"
    task: str = "shape"
    contrast_dim: int = 256
    mixup_alpha: float = 1.0
    temperature: float = 0.07
    supcon_average: str = "positives"
    hard_pair_mining: bool = True
    loss_weights: dict[str, float] = field(default_factory=lambda: {"ce": 1.0, "focal_supcon": 0.1})

    def __post_init__(self) -> None:
        if self.contrast_dim < 1:
            raise ValueError(f"method.contrast_dim must be positive, got {self.contrast_dim}")
        if self.mixup_alpha <= 0:
            raise ValueError(f"method.mixup_alpha must be positive, got {self.mixup_alpha}")
        if self.temperature <= 0:
            raise ValueError(f"method.temperature must be positive, got {self.temperature}")
        if self.supcon_average not in ("positives", "columns"):
            raise ValueError(
                f"method.supcon_average must be 'positives' or 'columns', got "
                f"{self.supcon_average!r}"
            )


class Contrastor(nn.Sequential):
    """``Linear(d, d) -> ReLU -> Linear(d, out)``, L2-normalised (the code's ``Contrastor``)."""

    def __init__(self, dim: int, out: int) -> None:
        super().__init__(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, out))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(super().forward(x), dim=-1)


@METHODS.register("core_tuning", CoreTuningConfig)
class CoreTuning(AlignmentModule):
    """Cross-entropy + focal SupCon on ``[f; f'; f'']`` of one training view ``image@0``."""

    loss_terms = ("ce", "focal_supcon")
    num_encoders = 1
    loss_on_eval = False  # evaluation batches carry the plain image, no view

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg: CoreTuningConfig = self.method_cfg
        check_views(self, 1, exact=True)
        if cfg.task not in self.labels:
            raise ValueError(
                f"method.task: {cfg.task!r} is not a label of this data; it has "
                f"{sorted(self.labels)}"
            )
        dim = self.hparams["model"]["embed_dim"]
        self.classifier = nn.Linear(dim, self.labels[cfg.task], bias=False)
        self.contrastor = Contrastor(dim, cfg.contrast_dim)

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        cfg: CoreTuningConfig = self.method_cfg
        name = self.modalities[0]
        local = self.embedding(name, outputs[view_name(name, 0)])
        labels = batch[f"label/{cfg.task}"]
        one_hot = F.one_hot(labels, self.labels[cfg.task]).to(local.dtype)
        rows, soft = local, one_hot
        if cfg.hard_pair_mining:
            features = gather_with_grad(local)
            positions = rank() * len(local) + torch.arange(len(local), device=local.device)
            draws = mixing_draws(
                batch["index"], positions, len(features), self.global_step, cfg.mixup_alpha, _MIXING
            )
            mixed, mixed_soft = hard_pair_mixtures(
                features, gather_no_grad(one_hot), gather_no_grad(labels), positions, draws
            )
            rows, soft = torch.cat([local, mixed]), torch.cat([one_hot, mixed_soft])
        ce = soft_cross_entropy(self.classifier(rows), soft)
        ids = soft_label_ids(gather_no_grad(soft))
        own = ids[rank() * len(rows) : (rank() + 1) * len(rows)]
        contrast = supcon_loss(
            [self.contrastor(rows)],
            own,
            cfg.temperature,
            base_temperature=OFFICIAL_BASE_TEMPERATURE,
            focal=True,
            average=cfg.supcon_average,
        )
        return {"ce": ce, "focal_supcon": contrast}

    def evaluators(self) -> dict[str, dict[str, Any]]:
        """The fine-tuned head's accuracy (``classifier`` evaluator)."""
        return {"classifier": {}}

    def eval_outputs(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, Tensor]:
        """The head's logits on the plain image: ``logits/image/<task>``."""
        name = self.modalities[0]
        logits = self.classifier(self.embedding(name, outputs[name]))
        return {f"logits/{name}/{self.method_cfg.task}": logits}
