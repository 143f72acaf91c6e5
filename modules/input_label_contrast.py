"""Input-label contrast: classify a sentence by the nearest class description, both embedded by
the same text encoder (Rethmeier & Augenstein, "A Primer on Contrastive Pretraining in Language
Processing: Methods, Lessons Learned and Perspectives", ACM Computing Surveys 2023;
methods/part1.md section 28).

The survey has no method of its own; its usable pattern is input-label contrastive learning
(Sec. "input-label contrast" of its taxonomy): the label is text too, a description of the
class, encoded by the text encoder into ``l_c``, and an input ``x`` is pulled to its class's
description and pushed from the others,

    L = -log [ exp(s(x, l_y) / tau) / sum_c exp(s(x, l_c) / tau) ]

(modules/losses/input_label_contrast.py), and predicts ``argmax_c s(x, l_c)``. Because the class
vectors are encodings of words, a pretrained encoder starts with a useful classifier (zero-shot)
and a few examples per class refine it, which a linear head, starting from random class vectors,
cannot do: the survey's argument for input-label contrast in few-shot and long-tail settings.

``method.head: linear`` is the baseline: a linear layer on the same (normalised) sentence
embedding, trained with softmax cross-entropy on the same shots.

Choices: the survey fixes neither the similarity nor tau; we use cosine similarity and the base
temperature (fixed at 0.05 in experiments/input_label_contrast.yaml). The description texts are
re-encoded with gradient at every step (C short texts), so the encoder learns from both sides,
as the survey's single-encoder variant does. The label tower is the input tower (weights
shared), the survey's "label-description tower" mapped onto alignlab's one text encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from modules.base import AlignmentModule, MethodConfig
from modules.losses.input_label_contrast import input_label_contrast_loss, label_logits
from modules.registry import METHODS
from modules.towers.output import TowerOutput

HEADS = ("descriptions", "linear")


@dataclass
class InputLabelContrastConfig(MethodConfig):
    name: str = "input_label_contrast"
    head: str = "descriptions"  # descriptions: input-label contrast; linear: the CE baseline
    task: str = "domain"  # the label classified (label/<task>)
    # the text of each class (label-id order); empty: the data's label descriptions, else its
    # class names
    descriptions: list[str] = field(default_factory=list)
    encoder: str = "text"

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head: expected one of {HEADS}, got {self.head!r}")


@METHODS.register("input_label_contrast", InputLabelContrastConfig)
class InputLabelContrast(AlignmentModule):
    """A text encoder and a classifier by label descriptions (or a linear head)."""

    loss_terms = ("ce",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg: InputLabelContrastConfig = self.method_cfg
        if cfg.encoder not in self.modalities:
            raise ValueError(f"method.encoder: {cfg.encoder!r} not among {list(self.modalities)}")
        if cfg.task not in self.labels:
            raise ValueError(
                f"method.task: the data has no label {cfg.task!r} (labels: {sorted(self.labels)})"
            )
        classes = self.labels[cfg.task]
        self.label_texts = list(
            cfg.descriptions
            or self.label_descriptions.get(cfg.task)
            or self.class_names.get(cfg.task, [])
        )
        if cfg.head == "descriptions" and len(self.label_texts) != classes:
            raise ValueError(
                f"method.descriptions: need one text per class of {cfg.task!r} ({classes}), "
                f"got {len(self.label_texts)}"
            )
        dim = self.hparams["model"]["embed_dim"]
        self.head = nn.Linear(dim, classes) if cfg.head == "linear" else None

    def label_embeddings(self) -> Tensor:
        """The class descriptions through the text encoder, L2-normalised [C, D] (with
        gradient in training)."""
        name = self.method_cfg.encoder
        ids, mask = self.tokenizer.encode(self.label_texts)
        out = self.towers[name](
            {"text_ids": ids.to(self.device), "text_mask": mask.to(self.device)}
        )
        return self.normalized(name, out)

    def logits(self, inputs: Tensor) -> Tensor:
        """Class logits [B, C] of L2-normalised sentence embeddings [B, D]."""
        if self.head is not None:
            return self.head(inputs)
        return label_logits(inputs, self.label_embeddings(), self.scale)

    def _input(self, outputs: dict[str, TowerOutput]) -> Tensor:
        """The normalised sentence: the plain input (evaluation) or its first view (training
        batches of the sentences family carry ``text@0`` / ``text@1``)."""
        name = self.method_cfg.encoder
        key = name if name in outputs else f"{name}@0"
        return self.normalized(name, outputs[key])

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        """Cross-entropy over the classes: against the encoded descriptions (input-label
        contrast) or the linear head's logits."""
        target = batch[f"label/{self.method_cfg.task}"].long()
        x = self._input(outputs)
        if self.head is not None:
            return {"ce": torch.nn.functional.cross_entropy(self.head(x), target, ignore_index=-1)}
        return {"ce": input_label_contrast_loss(x, self.label_embeddings(), target, self.scale)}

    def evaluators(self) -> dict[str, dict[str, Any]]:
        """Accuracy of the nearest description (or the head): ``classifier`` evaluator."""
        return {"classifier": {}}

    def eval_outputs(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, Tensor]:
        """``logits/<encoder>/<task>``: the class logits of the evaluation sentences."""
        cfg = self.method_cfg
        return {f"logits/{cfg.encoder}/{cfg.task}": self.logits(self._input(outputs))}
