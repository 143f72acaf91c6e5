"""SimCSE (Gao, Yao & Chen, EMNLP 2021): sentence embeddings by contrasting each sentence with
itself under another dropout mask (unsupervised), or an NLI premise with its entailment against
its contradiction (supervised); loss in modules/losses/simcse.py (Eq. 4 and 5).

The data's training mode decides which (datamodules/sentences.py): ``data.train=unsupervised``
feeds each sentence twice (``text@0``, ``text@1``; the tower's dropout makes the two views),
``data.train=nli`` feeds premise, entailment and contradiction (``text@0..2``) and the third
view becomes the hard negatives. Cosine similarity at a fixed temperature 0.05
(``model.temperature``, ``model.learnable_temperature: false``).

Pooling and head, as the official code's ``cls`` pooler: the tower's sentence vector goes
through an MLP (``Linear -> Tanh``, BERT's pooler) for the loss; unsupervised SimCSE evaluates
the vector *before* that MLP (``--mlp_only_train``), supervised SimCSE after it. That is
``mlp_only_train``, which by default follows the data (two views: true; NLI triples,
``data.train=nli``: false); ``embedding`` is what every evaluator reads. Departures: the tower's
sentence vector is its projected output (``[CLS]`` of the from-scratch transformer, or MiniLM's
mean-pooled tokens, projected to ``model.embed_dim``; for MiniLM that projection is new, so the
evaluated vector is not MiniLM's own), and the MLP is kept with MiniLM's mean pooling, where the
official code's ``avg`` pooler has none. Dropout: the from-scratch tower's
``model.text.dropout`` (the paper keeps BERT's 0.1); MiniLM's is its config's 0.1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from modules.base import AlignmentModule, MethodConfig, view_name
from modules.losses.simcse import simcse_loss
from modules.registry import METHODS
from modules.towers.output import TowerOutput


@dataclass
class SimCSEConfig(MethodConfig):
    """``mlp_only_train``: the MLP serves only the loss (unsupervised SimCSE) or also the
    evaluated embedding (supervised); None: true with two views (``data.train=unsupervised``
    or ``paraphrase``), false with NLI triples; ``hard_negative_weight``: added to each
    anchor's logit of its own hard negative (supervised; the paper's default 0)."""

    name: str = "simcse"
    mlp_only_train: bool | None = None
    hard_negative_weight: float = 0.0
    loss_weights: dict[str, float] = field(default_factory=lambda: {"simcse": 1.0})


@METHODS.register("simcse", SimCSEConfig)
class SimCSE(AlignmentModule):
    """InfoNCE between the views ``text@0`` and ``text@1`` (and ``text@2`` as hard negatives
    when the data has three views)."""

    loss_terms = ("simcse",)
    num_encoders = 1
    loss_on_eval = False  # evaluation batches are STS pairs, not training views
    deterministic_overrides = {"model.text.dropout": 0.0}  # dropout draws the views

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        name = self.modalities[0]
        self.num_views = self.views.get(name, 0)
        if self.num_views not in (2, 3):
            raise ValueError(
                f"simcse needs 2 training views of {name!r} (data.train=unsupervised or "
                f"paraphrase) or 3 (data.train=nli), the data has {self.num_views}"
            )
        width = self.hparams["model"]["embed_dim"]
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.Tanh())
        only_train = self.method_cfg.mlp_only_train
        #: Whether evaluation reads the vector before the MLP: unsupervised SimCSE's convention
        #: for two views, supervised SimCSE's (after it) for NLI triples, unless set.
        self.mlp_only_train = self.num_views == 2 if only_train is None else only_train

    def embedding(self, name: str, output: TowerOutput) -> Tensor:
        """The tower's sentence vector, or after the MLP unless ``mlp_only_train``."""
        return output.pooled if self.mlp_only_train else self.mlp(output.pooled)

    def _projected(self, outputs: dict[str, TowerOutput], v: int) -> Tensor:
        pooled = outputs[view_name(self.modalities[0], v)].pooled
        return F.normalize(self.mlp(pooled), dim=-1)

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        views = [self._projected(outputs, v) for v in range(self.num_views)]
        negative = views[2] if self.num_views == 3 else None
        loss = simcse_loss(
            views[0], views[1], self.scale, negative, self.method_cfg.hard_negative_weight
        )
        return {"simcse": loss}
