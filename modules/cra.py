"""CRA: cross-modal causal relation alignment for video question grounding (Chen, Liu, Chen, Su,
Zheng and Lin, CVPR 2025; methods/part1.md section 20), after WissingChen/CRA-GQA
(``models/cra.py``; its criterion module was not in the index).

A frame-sequence video tower (per-frame tokens ``F`` [B, T, D]), a text tower for the question
(pooled ``q``) and for each of the K question-answer texts ``"<question> <candidate>"``
(pooled ``a_k``, CRA's candidate encoding), and a grounding head:

- GSG (Gaussian smoothed grounding): question-to-frame attention ``p_t = softmax_t <W_q q,
  W_k F_t> / sqrt(D)`` gives the window's centre ``c = sum_t p_t (t + 1/2) / T``; a head on
  ``[q, sum_t p_t F_t]`` gives its width ``w`` in (0, 1); the window is the unit-mass Gaussian
  ``g_t`` with mean ``c`` and standard deviation ``w / sigma_ratio``
  (:func:`~modules.losses.grounding.gaussian_window`); the grounded feature is
  ``v = sum_t g_t F_t`` and the predicted segment ``[c - w/2, c + w/2]``;
- QA: ``logit_k = <norm(fuse[v, q]), norm(a_k)> / T_model``, cross-entropy with the correct
  candidate (term ``qa``);
- CMA (cross-modal alignment, term ``cma``): InfoNCE between the correct candidate's QA text
  ``a_{i, y_i}`` and the grounded feature ``h(v_i)`` of the same sample, the other samples'
  grounded features as negatives, cosine with tau = ``cma_temperature`` (0.07, the official
  helper), in both directions (the abstract's "bidirectional"; ⚠ the helper shows
  text -> video only).

``L = L_qa + lambda L_cma``. Grounding is never supervised (NExT-GQA has no training spans):
the window is learned through the answer and the alignment only. The claim run's baseline is QA
alone, ``method.loss_weights.cma=0`` (one override).

Choices and what is scoped down:

- negatives: the official helper draws k = B/2 random other samples; here every other sample
  of the (global) batch is a negative (:func:`~modules.losses.contrastive.clip_loss`, local
  rows against gathered columns), so the loss has no random draw and DDP gives the one-process
  value;
- the Gaussian's exact smoothing of the attention (its kernel and the threshold that cuts the
  window) is not confirmed: the window is the Gaussian itself, centred on the attention's mean;
- ECI (front-door visual and back-door linguistic causal interventions) is not built: it needs
  a confounder dictionary of clustered training features and a linguistic graph from a parser;
- no frozen vision-language model or LLM: small towers trained from scratch on 2 CPU cores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.base import DualTowerModule, MethodConfig
from modules.losses.contrastive import clip_loss
from modules.losses.grounding import gaussian_window
from modules.registry import METHODS
from modules.towers.output import TowerOutput


@dataclass
class CRAConfig(MethodConfig):
    """CRA's hyper-parameters (``cma_temperature``: the official helper's 0.07)."""

    name: str = "cra"
    cma_temperature: float = 0.07
    sigma_ratio: float = 4.0  # Gaussian standard deviation = window width / sigma_ratio (⚠)
    loss_weights: dict[str, float] = field(default_factory=lambda: {"qa": 1.0, "cma": 1.0})

    def __post_init__(self) -> None:
        if self.cma_temperature <= 0:
            raise ValueError(f"cma_temperature must be positive, got {self.cma_temperature}")
        if self.sigma_ratio <= 0:
            raise ValueError(f"sigma_ratio must be positive, got {self.sigma_ratio}")


class GaussianGrounding(nn.Module):
    """Question [B, D] and frames [B, T, D] -> window centre and width [B] (fractions of the
    clip) and the grounded feature [B, D] (frames pooled by the unit-mass Gaussian)."""

    def __init__(self, dim: int, sigma_ratio: float) -> None:
        super().__init__()
        self.query, self.key = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.width = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, 1))
        self.sigma_ratio = sigma_ratio

    def forward(self, question: Tensor, frames: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, t, d = frames.shape
        scores = torch.einsum("bd,btd->bt", self.query(question), self.key(frames))
        attention = torch.softmax(scores / math.sqrt(d), dim=1)
        times = (torch.arange(t, device=frames.device, dtype=frames.dtype) + 0.5) / t
        centre = attention @ times
        attended = torch.einsum("bt,btd->bd", attention, frames)
        width = torch.sigmoid(self.width(torch.cat([question, attended], dim=-1))).squeeze(-1)
        window = gaussian_window(centre, width, t, self.sigma_ratio)
        return centre, width, torch.einsum("bt,btd->bd", window, frames)


@METHODS.register("cra", CRAConfig)
class CRA(DualTowerModule):
    """Grounded QA: Gaussian grounding, answer scoring over candidates, and CMA."""

    loss_terms = ("qa", "cma")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.pair != ("video", "text"):
            raise ValueError(f"cra: needs the encoders (video, text), the data has {self.pair}")
        if "answer" not in self.labels:
            raise ValueError("cra: needs questions with answer candidates (data.task: qa)")
        cfg: CRAConfig = self.method_cfg
        dim = self.hparams["model"]["embed_dim"]
        self.grounding = GaussianGrounding(dim, cfg.sigma_ratio)
        self.fuse = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.align = nn.Linear(dim, dim)  # the grounded feature as CMA compares it

    def encode(self, batch: dict[str, Any]) -> dict[str, TowerOutput]:
        """The video and the question, plus ``qa``: the K question-answer texts, pooled
        [B, K, D]."""
        outputs = super().encode(batch)
        ids, mask = batch["text_ids_k"], batch["text_mask_k"]
        texts = self.towers["text"](
            {"text_ids": ids.flatten(0, 1), "text_mask": mask.flatten(0, 1)}
        )
        outputs["qa"] = TowerOutput(texts.pooled.unflatten(0, ids.shape[:2]))
        return outputs

    def _forward(self, outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        frames = outputs["video"].tokens
        if frames is None:
            raise ValueError("cra: needs the video tower's frame tokens")
        question = outputs["text"].pooled
        centre, width, grounded = self.grounding(question, frames)
        answer = F.normalize(self.fuse(torch.cat([grounded, question], dim=-1)), dim=-1)
        candidates = F.normalize(outputs["qa"].pooled, dim=-1)
        return {
            "centre": centre,
            "width": width,
            "grounded": grounded,
            "logits": self.scale * torch.einsum("bd,bkd->bk", answer, candidates),
            "candidates": candidates,
        }

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        out = self._forward(outputs)
        label = batch["label/answer"]
        true_text = out["candidates"][torch.arange(len(label), device=label.device), label]
        video = F.normalize(self.align(out["grounded"]), dim=-1)
        cfg: CRAConfig = self.method_cfg
        return {
            "qa": F.cross_entropy(out["logits"], label),
            "cma": clip_loss(true_text, video, 1.0 / cfg.cma_temperature),
        }

    def evaluators(self) -> dict[str, dict[str, Any]]:
        return {"grounding": {}}

    def eval_outputs(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, Tensor]:
        """Candidate scores (``qa/logits``) and the predicted segment (``grounding/*``)."""
        out = self._forward(outputs)
        half = out["width"] / 2
        return {
            "qa/logits": out["logits"],
            "grounding/start": (out["centre"] - half).clamp(0.0, 1.0),
            "grounding/end": (out["centre"] + half).clamp(0.0, 1.0),
        }
