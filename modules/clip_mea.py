"""CLIP retrieval optimisation with maintained joint-embedding alignment (Schall, Barthel, Hezel &
Jung, SISAP 2024, "Optimizing CLIP Models for Image Retrieval with Maintained Joint-Embedding
Alignment"; methods/part2.md Sec. 59; code: Visual-Computing/MCIP).

CLIP's image embeddings group images by what their captions say, not by what they look like.
The paper fine-tunes the image tower for image-to-image retrieval with a classification-based
metric-learning loss, without losing the text alignment:

- ``phase: image_metric`` (stage 1): the image tower alone is trained with an ArcFace loss
  (modules/losses/metric_learning.py) over classes of the embedded data. A class is a
  combination of labels (``labels``, default shape x colour of the main object: 36 classes).
  ``class_weights: learned``: a normalised classifier ``W [C, D]`` (the paper's sequential
  method, 2SFT). ``class_weights: pseudo_caption``: the class weights are the (frozen) text
  tower's embeddings of one pseudo-caption per class (``template``, e.g. "a picture of a red
  circle"), so the image embedding is pulled towards text and stays aligned with it (the
  paper's second method; MCIP's ``MultiLabelArcMarginProductForText`` likewise puts caption
  embeddings in the place of the ArcFace class weights).
- ``phase: text_realign`` (stage 2): the image tower is frozen and the text tower re-trained
  with the symmetric image-text InfoNCE (``clip_loss``) so text re-aligns with the new images.

Both phases require the other tower frozen (``model.frozen``), so the right tower alone moves.
In ``image_metric`` the temperature gets no gradient (it does not enter the ArcFace loss) and
keeps the value it was initialised with, for stage 2.

The paper's target metric, image-to-image retrieval by class (``{val,test}/class_retrieval/R1``
and ``mAP``, callbacks.metrics.ClassRetrieval), is logged for every method on the built-in data,
so the pretrained CLIP stage is the baseline. UNCONFIRMED details (not in the abstract; the MCIP
code's defaults used): ``scale = 30``, ``margin = 0.1`` rad, insightface's non-easy margin.
"""

from __future__ import annotations

import itertools
import math
import string
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.base import DualTowerModule, MethodConfig
from modules.clustering import combined_class
from modules.losses.contrastive import clip_loss
from modules.losses.metric_learning import MARGINS, margin_softmax_loss
from modules.registry import METHODS
from modules.towers.output import TowerOutput

PHASES = ("image_metric", "text_realign")
CLASS_WEIGHTS = ("learned", "pseudo_caption")


@dataclass
class ClipMEAConfig(MethodConfig):
    name: str = "clip_mea"
    phase: str = "image_metric"
    # batch labels (label/<name>) whose combination is the class; the first varies slowest
    labels: list[str] = field(default_factory=lambda: ["shape", "color"])
    # the name of each label value, in label-id order; empty: the names the data declares
    class_names: dict[str, list[str]] = field(default_factory=dict)
    class_weights: str = "learned"
    # the pseudo-caption of a class (class_weights: pseudo_caption), one field per label
    template: str = "a picture of a {color} {shape}"
    scale: float = 30.0
    margin: float = 0.1
    margin_kind: str = "arc"  # arc (ArcFace) | cos (CosFace)
    loss_weights: dict[str, float] = field(default_factory=lambda: {"metric": 1.0, "clip": 1.0})

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("phase", self.phase, PHASES),
            ("class_weights", self.class_weights, CLASS_WEIGHTS),
            ("margin_kind", self.margin_kind, MARGINS),
        ):
            if value not in allowed:
                raise ValueError(f"{name}: must be one of {allowed}, got {value!r}")
        if not self.labels:
            raise ValueError("labels: need at least one label")
        fields = {f for _, f, _, _ in string.Formatter().parse(self.template) if f}
        if self.class_weights == "pseudo_caption" and fields != set(self.labels):
            raise ValueError(
                f"template: must name exactly the labels {sorted(self.labels)}, "
                f"got {sorted(fields)}"
            )


def pseudo_captions(template: str, labels: list[str], names: dict[str, list[str]]) -> list[str]:
    """One caption per class (a combination of ``labels``' values), in class-id order."""
    return [
        template.format(**dict(zip(labels, combo, strict=True)))
        for combo in itertools.product(*(names[label] for label in labels))
    ]


@METHODS.register("clip_mea", ClipMEAConfig)
class ClipMEA(DualTowerModule):
    """Image tower: ArcFace over label classes (``image_metric``); then text tower: InfoNCE
    against the frozen image tower (``text_realign``)."""

    loss_terms = ("metric", "clip")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.method_cfg
        self.item_side, self.caption_side = self.pair
        trained, fixed = (
            (self.item_side, self.caption_side)
            if cfg.phase == "image_metric"
            else (self.caption_side, self.item_side)
        )
        if fixed not in self.frozen or trained in self.frozen:
            raise ValueError(
                f"phase {cfg.phase}: trains the {trained} tower alone; set model.frozen: [{fixed}]"
            )
        if cfg.class_weights == "pseudo_caption" and self.caption_side != "text":
            raise ValueError("class_weights: pseudo_caption needs a text tower")
        self.names = {**self.class_names, **cfg.class_names}
        unknown = [label for label in cfg.labels if label not in self.names]
        if unknown:
            raise ValueError(
                f"method.labels: no class names for {unknown} (the data names "
                f"{sorted(self.class_names)}; or set method.class_names)"
            )
        self.num_classes = math.prod(len(self.names[label]) for label in cfg.labels)
        self.class_weights: nn.Parameter | None = None
        if cfg.phase == "image_metric":
            self.temperature.requires_grad_(False)  # not in the ArcFace loss
            if cfg.class_weights == "learned":
                weights = torch.empty(self.num_classes, self.hparams["model"]["embed_dim"])
                self.class_weights = nn.Parameter(nn.init.xavier_uniform_(weights))
        self.pseudo_captions = (
            pseudo_captions(cfg.template, cfg.labels, self.names)
            if cfg.class_weights == "pseudo_caption"
            else []
        )

    def class_ids(self, batch: dict[str, Any]) -> Tensor:
        """The combined class of every row (mixed radix over ``labels``); -1 where a label is
        missing (-1)."""
        cfg = self.method_cfg
        return combined_class(
            [batch[f"label/{label}"] for label in cfg.labels],
            [len(self.names[label]) for label in cfg.labels],
        )

    def losses(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, torch.Tensor]:
        cfg = self.method_cfg
        item = self.embedding(self.item_side, outputs[self.item_side])
        if cfg.phase == "text_realign":
            caption = self.embedding(self.caption_side, outputs[self.caption_side])
            return {
                "clip": clip_loss(
                    F.normalize(item, dim=-1),
                    F.normalize(caption, dim=-1),
                    self.scale,
                    ids=batch["item_id"],
                )
            }
        classes = self.class_ids(batch)
        known = classes >= 0
        weights = (
            self.class_weights
            if self.class_weights is not None
            else self.encode_texts(self.pseudo_captions)  # frozen text tower, no gradient
        )
        loss = margin_softmax_loss(
            item[known], weights, classes[known], cfg.scale, cfg.margin, cfg.margin_kind
        )
        return {"metric": loss}
