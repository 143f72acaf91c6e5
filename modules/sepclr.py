"""SepCLR (Louiset et al., "Separating common from salient patterns with contrastive
representation learning", ICLR 2024): contrastive analysis, i.e. a background set (label 0,
e.g. healthy subjects, plain images) and a target set (label 1, the same images plus a salient
pattern), one representation split into a *common* space (what both sets share) and a
*salient* space (what only the target set has).

Per image two augmented views go through the encoder and two branches, as in the official
``cifar_mnist/architectures.py``: a common branch ``Linear(h) -> c`` (32-d, the representation
evaluated) followed by a projection MLP ``32 -> 128 -> 32`` whose output is L2-normalised for
the loss, and a salient branch of the same shape whose output is **not** normalised. The loss
(modules/losses/sepclr.py, the official ``sep_clr_k-jem.py`` term by term): align + uniformity
of the common codes on every image; align on the target images + uniformity of the salient
codes with the background rows set to the null vector; the background's salient codes pulled
to that null vector (beta_r); and the kernel joint-entropy (JEM) term that keeps common and
salient codes independent (lambda). ``method.loss_weights`` are the paper's beta_s = beta_r =
1000, lambda = 10 (terms ``salient``, ``background``, ``jem``; ``common`` weighs 1).

Training reads only the group label (``label/<group_label>``: which set an image is in), never
the salient attribute. Evaluation (what the paper's tables report): the common representation
``c`` is the method's ``embedding`` (the data's k-NN / linear probe / class retrieval read it);
both spaces are also exposed as ``space/common`` and ``space/salient`` for the ``space_probe``
evaluator (callbacks/spaces.py): linear-probe accuracy of every label from each space, the
salient attribute scored on the target set only (its label is -1 elsewhere).

Encoders (``method.separate_encoders``): as the official code, by default the salient branch
has an encoder of its own, a second copy of ``model.image`` initialised afresh (the code trains
two ResNet-18s); ``false`` feeds both branches from the one tower (the spec's "one encoder, two
heads"). On shapes_salient (experiments/sepclr.yaml, seed 0) one shared tower separated
nothing: its common space held the glyph as well as its salient space and learned colour far
worse than with two encoders. With two encoders only the JEM term couples the branches; with
one, the tower also takes the gradient of the salient terms weighted 1000 (a likely cause, not
isolated). The projection MLPs' BatchNorm runs per view (the official code encodes view 1 and view 2
in two calls) over the global batch (:class:`~modules.simclr.GlobalBatchNorm1d`). Scoped down:
the platform's towers instead of ResNet-18s, and its AdamW (the paper: Adam 3e-4, no weight
decay; set ``optim.weight_decay: 0``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from modules.base import AlignmentModule, MethodConfig, view_name
from modules.losses.sepclr import PAPER_WEIGHTS, sepclr_terms
from modules.registry import METHODS
from modules.simclr import ProjectionHead, check_views
from modules.towers.output import TowerOutput


@dataclass
class SepCLRConfig(MethodConfig):
    """``common_dim``, ``salient_dim``: the two spaces (paper: 32 each); ``head_hidden``: the
    projection MLPs' width (paper: 128); ``kernel_tau``: the Gaussian kernel's tau (paper: 0.5);
    ``group_label``: the label task that says background (0) or target (1);
    ``separate_encoders``: the salient branch on an encoder of its own (the official code)."""

    name: str = "sepclr"
    common_dim: int = 32
    salient_dim: int = 32
    head_hidden: int = 128
    kernel_tau: float = 0.5
    group_label: str = "group"
    separate_encoders: bool = True
    loss_weights: dict[str, float] = field(default_factory=lambda: dict(PAPER_WEIGHTS))

    def __post_init__(self) -> None:
        for key in ("common_dim", "salient_dim", "head_hidden"):
            if getattr(self, key) < 1:
                raise ValueError(f"method.{key} must be positive, got {getattr(self, key)}")
        if self.kernel_tau <= 0:
            raise ValueError(f"method.kernel_tau must be positive, got {self.kernel_tau}")


class Branch(nn.Module):
    """``Linear(dim, out)`` (the evaluated code) then the projection MLP (the loss's code)."""

    def __init__(self, dim: int, out: int, hidden: int) -> None:
        super().__init__()
        self.code = nn.Linear(dim, out)
        self.head = ProjectionHead(out, hidden, out)


@METHODS.register("sepclr", SepCLRConfig)
class SepCLR(AlignmentModule):
    """Common and salient branches on one encoder (see the module docstring)."""

    loss_terms = ("common", "salient", "background", "jem")
    num_encoders = 1
    loss_on_eval = False  # evaluation batches carry the plain image, no views

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg: SepCLRConfig = self.method_cfg
        check_views(self, 2, exact=True)
        if cfg.group_label not in self.labels:
            raise ValueError(
                f"sepclr needs the label {cfg.group_label!r} (background 0 / target 1); the data "
                f"has {sorted(self.labels)} (method.group_label)"
            )
        dim = self.hparams["model"]["embed_dim"]
        self.common = Branch(dim, cfg.common_dim, cfg.head_hidden)
        self.salient = Branch(dim, cfg.salient_dim, cfg.head_hidden)
        #: The salient branch's own encoder (``separate_encoders``), keyed like the towers.
        self.salient_towers: nn.ModuleDict | None = None
        if cfg.separate_encoders:
            self.salient_towers = copy.deepcopy(self.towers)
            for layer in self.salient_towers.modules():
                if hasattr(layer, "reset_parameters") and layer is not self.salient_towers:
                    layer.reset_parameters()

    def encode(self, batch: dict[str, Any]) -> dict[str, TowerOutput]:
        """The towers' outputs, and the salient encoder's as ``salient/<name>`` (``image``,
        ``image@0``, ...) when it has one."""
        outputs = self.encode_with(self.towers, batch)
        if self.salient_towers is not None:
            own = self.encode_with(self.salient_towers, batch)
            outputs |= {f"salient/{key}": value for key, value in own.items()}
        return outputs

    def salient_input(self, outputs: dict[str, TowerOutput], key: str) -> Tensor:
        """The pooled features the salient branch reads for output ``key``."""
        prefix = "salient/" if self.salient_towers is not None else ""
        return outputs[prefix + key].pooled

    def embedding(self, name: str, output: TowerOutput) -> Tensor:
        """The common code ``c`` (what the data's evaluators read)."""
        return self.common.code(output.pooled)

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        cfg: SepCLRConfig = self.method_cfg
        name = self.modalities[0]
        commons, salients = [], []
        for v in (0, 1):
            pooled = outputs[view_name(name, v)].pooled
            commons.append(F.normalize(self.common.head(self.common.code(pooled)), dim=-1))
            salient = self.salient_input(outputs, view_name(name, v))
            salients.append(self.salient.head(self.salient.code(salient)))
        target = batch[f"label/{cfg.group_label}"] == 1
        return sepclr_terms(*commons, *salients, target, cfg.kernel_tau)

    def eval_outputs(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, Tensor]:
        name = self.modalities[0]
        return {
            "space/common": self.common.code(outputs[name].pooled),
            "space/salient": self.salient.code(self.salient_input(outputs, name)),
        }

    def evaluators(self) -> dict[str, dict[str, Any]]:
        return {"space_probe": {}}
