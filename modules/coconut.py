"""COCONUT: Continual Contrastive Spoken Language Understanding (Cappellazzo, Fini, Yang,
Falavigna, Brutti & Raj, Findings of ACL 2024; methods/part2.md section 63).

Class-incremental SLU: intents arrive in tasks; experience replay keeps a small memory of
earlier tasks' utterances, and the model after the previous task is a frozen teacher. The loss
of task k is

    L = L_CE + lambda_NSPT L_NSPT + lambda_MM L_MM,

- ``ce``: intent cross-entropy of the audio side on every sample of the batch (new and
  rehearsal), over all intents;
- ``nspt`` (modules/losses/coconut.py): supervised contrast on the rehearsal samples only,
  anchors and negatives from the student's audio embeddings, positives from the teacher's
  audio embeddings of same-intent rehearsal samples (preserves the old geometry);
- ``mm``: audio-text supervised contrast on the new-task samples (same intent = positive).

How the platform expresses the continual setting (experiments/coconut.yaml): one stage per
task, each ``init_from`` and ``teacher_from`` the previous one; ``data.task`` selects the
task's intents plus ``data.memory_size`` rehearsal items of earlier intents, flagged
``label/rehearsal`` (datamodules/continual.py). The intent head is carried from stage to stage
from the last of the ``features_from`` stages (the earlier tasks, in order), read in
``prepare_fit``; they also let the ``continual`` evaluator (callbacks/continual.py) measure
forgetting: this method runs each earlier model's audio tower and head on the evaluation
batches (``logits/task<l>/intent``).
Plain replay is ``loss_weights: {nspt: 0, mm: 0}``; plain fine-tuning adds
``data.memory_size=0``.

Scoped down and unconfirmed (no official code; the paper's method section could not be read
here, only its abstract; the spec marks the equations UNCONFIRMED):

- the paper's model is a seq2seq transformer (wav2vec-style encoder, decoder emitting the
  transcript and the intent, CE + optional decoder KD); here the audio tower with a linear
  intent head (CE) and a small text transformer that reads the transcript (for ``mm``);
- NSPT follows the spec: positives ``P(i)`` = teacher embeddings of the same-intent rehearsal
  samples (the anchor's own included), negatives = student embeddings of rehearsal samples of
  other intents, SupCon "out" normalisation (mean over positives outside the log); whether
  the paper's negatives also include new-task samples is not confirmed (here: rehearsal only,
  "applied only to the rehearsal samples");
- ``mm`` uses the base's learnable temperature; NSPT a fixed ``nspt_temperature`` = 0.1
  (SupCon's default; the paper's value is not confirmed); both lambdas default to 1
  (not confirmed);
- the intent head has every intent from the first task on (class-incremental, argmax over
  all intents; the paper's decoder emits intent tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.base import AlignmentModule, DualTowerModule, FitContext, MethodConfig
from modules.losses.coconut import multimodal_supcon_loss, nspt_loss
from modules.registry import METHODS
from modules.towers.output import TowerOutput


@dataclass
class COCONUTConfig(MethodConfig):
    name: str = "coconut"
    label: str = "intent"  # the batch label the head predicts (label/<label>)
    nspt_temperature: float = 0.1
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"ce": 1.0, "nspt": 1.0, "mm": 1.0}
    )

    def __post_init__(self) -> None:
        if not self.nspt_temperature > 0:
            raise ValueError(f"nspt_temperature: must be > 0, got {self.nspt_temperature}")
        if not self.label:
            raise ValueError("label: must name a batch label (label/<label>)")


@METHODS.register("coconut", COCONUTConfig)
class COCONUT(DualTowerModule):
    """Intent CE on the audio side + NSPT on rehearsal samples (teacher positives) + audio-text
    supervised contrast on new samples."""

    loss_terms = ("ce", "nspt", "mm")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg: COCONUTConfig = self.method_cfg
        if cfg.label not in self.labels:
            raise ValueError(f"method.label: the data has no label {cfg.label!r} ({self.labels})")
        if "audio" not in self.modalities:
            raise ValueError(f"coconut needs an audio encoder; the data has {self.modalities}")
        self.audio_side = "audio"
        self.text_side = next(m for m in self.modalities if m != "audio")
        self.head = nn.Linear(self.hparams["model"]["embed_dim"], self.labels[cfg.label])
        # a frozen copy of the initial towers until ``teacher_from`` replaces it; unused in the
        # first task, which has no rehearsal samples (and checkpoints always hold a teacher)
        self.set_teacher(self.state_dict())
        #: The models after the earlier tasks (``features_from``), for the evaluation only.
        self.earlier: list[AlignmentModule] = []

    def prepare_fit(self, ctx: FitContext) -> None:
        """Keep the earlier tasks' models (frozen) to evaluate them beside this one; the intent
        head continues from the last of them (the previous task's model; the towers come from
        ``init_from``)."""
        self.earlier = [model.requires_grad_(False).eval() for model in ctx.earlier]
        if self.earlier:
            self.head.load_state_dict(self.earlier[-1].head.state_dict())

    def intent_logits(self, output: TowerOutput) -> Tensor:
        """Intent logits [B, C] of the audio tower's output."""
        return self.head(self.embedding(self.audio_side, output))

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        cfg: COCONUTConfig = self.method_cfg
        labels = batch[f"label/{cfg.label}"]
        rehearsal = batch.get("label/rehearsal", torch.zeros_like(labels)).bool()
        audio = self.normalized(self.audio_side, outputs[self.audio_side])
        text = self.normalized(self.text_side, outputs[self.text_side])
        terms = {
            "ce": F.cross_entropy(self.intent_logits(outputs[self.audio_side]), labels),
            "mm": multimodal_supcon_loss(audio, text, labels, ~rehearsal, self.scale),
        }
        teacher = self.encode_teacher({"audio": batch["audio"]})[self.audio_side]
        teacher_audio = F.normalize(self.embedding(self.audio_side, teacher), dim=-1)
        terms["nspt"] = nspt_loss(audio, teacher_audio, labels, rehearsal, cfg.nspt_temperature)
        return terms

    def evaluators(self) -> dict[str, dict[str, Any]]:
        """Intent accuracy (``classifier``) and per-task accuracy / forgetting (``continual``)."""
        return {"classifier": {}, "continual": {"label": self.method_cfg.label}}

    def eval_outputs(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, Tensor]:
        """``logits/audio/<label>`` of this model and ``logits/task<l>/<label>`` of the model
        after each earlier task ``l`` (``features_from``, in task order)."""
        label = self.method_cfg.label
        logits = {f"logits/{self.audio_side}/{label}": self.intent_logits(outputs["audio"])}
        for task, model in enumerate(self.earlier, start=1):
            model.to(self.device)
            with torch.no_grad():
                out = model.towers[self.audio_side]({"audio": batch["audio"]})
                logits[f"logits/task{task}/{label}"] = model.intent_logits(out)
        return logits
