"""EPCFormer's Expression Alignment with a light grounding head (Chen, Lin, Zhong, Fu, Nai,
Yang & Li, "EPCFormer: Expression Prompt Collaboration Transformer for Universal Referring Video
Object Segmentation", arXiv 2308.04162; methods/part2.md Sec. 65).

One model grounds an object from either kind of expression prompt, audio (A-VOS) or text
(R-VOS). Its Expression Alignment (EA) mechanism contrasts the audio and text expressions that
refer to the same object, so the two prompt encoders share one embedding space and what the
grounding learns from one kind of prompt serves the other:

    L = L_mask(audio) + L_mask(text) + lambda_EA L_EA,
    L_EA = 1/2 [NCE_{a->t} + NCE_{t->a}]       (expression_alignment_loss),
    L_mask = 2 focal + 5 Dice                  (ReferFormer's mask weights).

Here: an image tower with patch tokens (``TowerOutput.tokens``), an audio and a text tower for
the expressions, and a light grounding head shared by both prompts (:class:`GroundingHead`):
each patch token, with a learned position embedding, is modulated by the expression (FiLM:
``v * (1 + W_g e) + W_b e``), one self-attention layer lets the patches compare with each other
("the one on the left" needs the other candidates), and a linear layer gives each patch the
logits of its own pixels (``patch x patch``, laid out in place: a sub-pixel decoder), so a
coarse grid of tokens still draws a pixel mask. The head reads the L2-normalised pooled
expression embedding, the same one EA aligns.

Choices (the paper's equations and code were not available: the official repository
``lab206/EPCFormer`` holds only a README, the spec has the abstract only):

- EA as the spec's expected form, a symmetric InfoNCE on pooled projected expression features
  (UNCONFIRMED); tau 0.07, fixed (CLIP's initial value; the paper's tau is not known);
  positives are the two expressions of one item (the paper's pairs of one object). The
  built-in scenes reuse 64 expressions, so a batch holds items with the same words; their text
  embeddings are identical, and then the item-pair loss equals the one that counts every item
  with the same words as a positive (tests/test_epcformer.py checks it): no false negatives,
  and no label beyond the text itself;
- lambda_EA = 1 (``method.loss_weights.alignment``; UNCONFIRMED); the baseline is
  ``method.loss_weights.alignment=0``, the same model and data without the term;
- mask loss: ReferFormer's sigmoid focal (alpha 0.25, gamma 2) and Dice with weights 2 and 5.

Scoped down, and why: the paper's Expression-Visual Attention (audio-text collaboration and
expression-visual cross-attention over a Video-Swin / ResNet backbone with RoBERTa and
wav2vec-style encoders) and ReferFormer's query-based mask decoder, box and matching losses are
replaced by the light head above (CPU budget); videos by still images, one frame per
expression (datamodules/referring_shapes.py); J&F on Ref-YouTube-VOS / A-VOS by mask IoU
(``mask_grounding`` evaluator, callbacks/mask_grounding.py) on built-in scenes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from modules.base import AlignmentModule, MethodConfig
from modules.losses.epcformer import dice_loss, expression_alignment_loss, sigmoid_focal_loss
from modules.registry import METHODS
from modules.towers.output import TowerOutput

EXPRESSIONS = ("audio", "text")


@dataclass
class EPCFormerConfig(MethodConfig):
    name: str = "epcformer"
    hidden: int = 64  # width of the grounding head
    heads: int = 4  # attention heads of its self-attention layer
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    # alignment 0: the baseline without Expression Alignment
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"focal": 2.0, "dice": 5.0, "alignment": 1.0}
    )

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.heads < 1 or self.hidden % self.heads:
            raise ValueError(
                f"method.hidden must be a positive multiple of method.heads, got {self.hidden}, "
                f"{self.heads}"
            )
        if not 0 <= self.focal_alpha <= 1 or self.focal_gamma < 0:
            raise ValueError("method.focal_alpha must lie in [0, 1] and focal_gamma be >= 0")


class GroundingHead(nn.Module):
    """Expression-conditioned mask logits: FiLM of the patch tokens by the expression, one
    pre-norm self-attention layer over the patches, a linear layer to the ``pixels`` logits of
    each patch's pixels (``patch x patch``, row-major)."""

    def __init__(self, dim: int, num_patches: int, hidden: int, heads: int, pixels: int) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.randn(num_patches, dim) * 0.02)
        self.visual = nn.Sequential(nn.Linear(dim, hidden), nn.LayerNorm(hidden))
        self.gain = nn.Linear(dim, hidden)
        self.shift = nn.Linear(dim, hidden)
        self.mix = nn.TransformerEncoderLayer(
            hidden, heads, 2 * hidden, dropout=0.0, batch_first=True, norm_first=True
        )
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, pixels))

    def forward(self, patches: Tensor, expression: Tensor) -> Tensor:
        """``patches`` [B, T, D], ``expression`` [B, D] -> logits [B, T, pixels]."""
        v = self.visual(patches + self.position)
        h = v * (1 + self.gain(expression)[:, None]) + self.shift(expression)[:, None]
        return self.out(self.mix(h))


@METHODS.register("epcformer", EPCFormerConfig)
class EPCFormer(AlignmentModule):
    """Grounding from audio or text expressions with a shared head, plus Expression Alignment
    between the two expressions (the image tower's patch tokens feed the head)."""

    num_encoders = 3
    loss_terms = ("focal", "dice", "alignment")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if set(self.modalities) != {"image", *EXPRESSIONS}:
            raise ValueError(f"epcformer needs image, audio and text; got {self.modalities}")
        cfg: EPCFormerConfig = self.method_cfg
        size = int(self.hparams["context"]["image_size"])
        self.image_size = size
        with torch.no_grad():
            probe = self.towers["image"]({"image": torch.zeros(1, 3, size, size)})
        if probe.tokens is None:
            raise ValueError("epcformer: the image tower must return patch tokens")
        self.grid = round(probe.tokens.shape[1] ** 0.5)
        if self.grid**2 != probe.tokens.shape[1] or size % self.grid:
            raise ValueError(
                f"epcformer: {probe.tokens.shape[1]} patches are not a square grid that divides "
                f"the {size}-pixel image"
            )
        self.patch = size // self.grid
        dim = self.hparams["model"]["embed_dim"]
        self.head = GroundingHead(dim, self.grid**2, cfg.hidden, cfg.heads, self.patch**2)

    def mask_logits(self, image: TowerOutput, expression: Tensor) -> Tensor:
        """Per-pixel logits [B, S, S] of the object ``expression`` [B, D] refers to: each
        patch's logits laid out over its pixels."""
        g, p = self.grid, self.patch
        logits = self.head(image.tokens, expression)  # [B, g*g, p*p]
        return (
            logits.unflatten(2, (p, p))
            .unflatten(1, (g, g))
            .permute(0, 1, 3, 2, 4)
            .flatten(3)
            .flatten(1, 2)
        )

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        cfg: EPCFormerConfig = self.method_cfg
        target = batch["mask"]
        expressions = {m: self.normalized(m, outputs[m]) for m in EXPRESSIONS}
        focal, dice = [], []
        for expression in expressions.values():
            logits = self.mask_logits(outputs["image"], expression)
            focal.append(sigmoid_focal_loss(logits, target, cfg.focal_alpha, cfg.focal_gamma))
            dice.append(dice_loss(logits, target))
        alignment = expression_alignment_loss(expressions["audio"], expressions["text"], self.scale)
        return {
            "focal": torch.stack(focal).mean(),
            "dice": torch.stack(dice).mean(),
            "alignment": alignment,
        }

    def evaluators(self) -> dict[str, dict[str, Any]]:
        """Mask IoU of the grounding from each kind of expression (callbacks/mask_grounding.py)."""
        return {"mask_grounding": {"expressions": list(EXPRESSIONS)}}

    def eval_outputs(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, Tensor]:
        """``mask_logits/<audio|text>`` [B, S, S]: the grounding from each expression."""
        return {
            f"mask_logits/{m}": self.mask_logits(outputs["image"], self.normalized(m, outputs[m]))
            for m in EXPRESSIONS
        }
