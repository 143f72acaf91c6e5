"""LanguageBind (Zhu et al., "LanguageBind: Extending Video-Language Pretraining to N-modality by
Language-based Semantic Alignment", ICLR 2024; methods/part1.md Sec. 12; official code
``PKU-YuanGroup/LanguageBind``: ``model/build_model.py``, ``training/params.py``).

Language is the binding modality: one frozen language tower is shared by N modality towers
(a star), and each modality M is bound to language by its own CLIP loss (Sec. 3.3):

    L_M = CLIP(z^M, z^L) = 1/2 [CE(S, I) + CE(S^T, I)],  S_ij = <z^M_i, z^L_j> / tau,

the paper's total being the sum over modalities (here ``sum_M w_M L_M`` with
``method.loss_weights.<modality>``, weight 1 by default). Modalities never paired in training
(depth and sound) meet only through language: retrieval between them is emergent.

Towers, as the paper's (Sec. 3.1-3.2): the language tower is frozen (``--lock-text``); every
modality tower starts from the pretrained image tower (OpenCLIP's ViT there; here the image tower
of an earlier CLIP stage named by ``features_from``, copied in by :meth:`prepare_fit`, which
also copies that stage's text tower into the language tower) and is tuned with LoRA
(``--lock-image`` + ``--convert_to_lora``): its weights frozen, a rank-r update
``(alpha / r) B A`` trained on every linear and convolutional layer (modules/towers/lora.py).
The official ``model/process_clip.py: convert_model_to_lora`` wraps, with peft, the attention
projections (q, k, v, out) of the ViT encoder; the CNN towers here have no attention, so every
layer with a weight matrix or kernel gets the update (r = 16 and alpha = 16 by default, dropout
0: ``training/params.py``; the depth script uses r = 2). A one-channel spectrogram tower
starts from the image tower's first convolution summed over its three input channels (the same
filter on a grey image); the depth tower reads the map repeated to 3 channels (the official
``DepthNorm``), so it takes the image weights as they are.

``anchor`` is the binding modality. ``anchor: image`` is ImageBind (Girdhar et al., CVPR 2023),
the paper's baseline: the image tower is the frozen hub, the other towers are bound to images.
The anchor tower is frozen by the method; towers listed in ``model.frozen`` too (ImageBind's
text tower), and those have no loss term (both sides fixed: nothing to learn but tau).

Choices: one shared, learnable temperature (init 0.07, the paper's ``init_temp``) for all
modalities, where the paper, training each modality in its own run, has one per run; all
modalities of a scene are in each batch (the paper trains modality-language pairs from
separate runs over VIDAL-10M), which changes nothing in the loss since no term pairs two
non-anchor modalities. Scoped down: no patch dropout (0.5 in the paper, for ViT tokens; the
towers here are CNNs), no multi-view enhanced captions (the built-in captions already are five
paraphrases), CNN towers in place of ViT-L/14, and the language tower is the text tower of a
first CLIP stage of ours rather than OpenCLIP's (``model.text.name=minilm`` would freeze MiniLM,
but its 1.5 s per batch of 128 on 2 CPU cores is past this platform's benchmark budget).
peft's LoRA is not used: the method must build on the core install (peft would be an
optional extra's package) and the towers need only linear and convolution layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from modules.base import AlignmentModule, FitContext, MethodConfig
from modules.losses.contrastive import clip_loss
from modules.registry import METHODS
from modules.towers.lora import add_lora
from modules.towers.output import TowerOutput

#: Loss terms: one per modality the data may bind (the data decides which are computed).
MODALITY_TERMS = ("image", "video", "audio", "depth", "text")


@dataclass
class LanguageBindConfig(MethodConfig):
    name: str = "languagebind"
    anchor: str = "text"  # the binding modality (frozen); image: ImageBind, the baseline
    lora_rank: int = 16  # 0: the modality towers are fine-tuned in full (no LoRA)
    lora_alpha: float = 16.0
    # with features_from: the earlier stage's tower that towers of modalities it lacks start
    # from (prepare_fit); None: every tower must have its own modality there
    init_towers_from: str | None = "image"
    loss_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.lora_rank < 0:
            raise ValueError(f"method.lora_rank must be >= 0, got {self.lora_rank}")
        if self.lora_alpha <= 0:
            raise ValueError(f"method.lora_alpha must be positive, got {self.lora_alpha}")


@METHODS.register("languagebind", LanguageBindConfig)
class LanguageBind(AlignmentModule):
    """Each trained modality tower bound to the frozen anchor tower by its own CLIP loss."""

    num_encoders = None  # the anchor and any number of modalities
    loss_terms = MODALITY_TERMS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg: LanguageBindConfig = self.method_cfg
        if cfg.anchor not in self.modalities:
            raise ValueError(
                f"method.anchor {cfg.anchor!r} is not among the data's {list(self.modalities)}"
            )
        self.towers[cfg.anchor].requires_grad_(False)
        #: The modalities bound to the anchor, each with its own loss term.
        self.bound = tuple(m for m in self.modalities if m != cfg.anchor and m not in self.frozen)
        if not self.bound:
            raise ValueError(f"no modality to bind to {cfg.anchor!r}: all towers are frozen")
        if cfg.lora_rank:
            for m in self.bound:
                add_lora(self.towers[m], cfg.lora_rank, cfg.lora_alpha)

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        """``{M: CLIP(z^M, z^anchor)}`` for every bound modality M."""
        anchor = self.normalized(self.method_cfg.anchor, outputs[self.method_cfg.anchor])
        ids = batch["item_id"]
        return {
            m: clip_loss(self.normalized(m, outputs[m]), anchor, self.scale, ids=ids)
            for m in self.bound
        }

    def evaluators(self) -> dict[str, dict[str, Any]]:
        """Zero-shot classification of every non-text modality against the class prompts
        embedded by the text tower (the data's ``zero_shot`` scores only its first modality),
        when the data has zero-shot tasks."""
        return {"modality_zero_shot": {"modalities": [m for m in self.modalities if m != "text"]}}

    def prepare_fit(self, ctx: FitContext) -> None:
        """Start from the pretrained towers of an earlier stage (``features_from``): each tower
        from the earlier model's tower of the same modality, else from its
        ``init_towers_from`` tower (the image tower); LoRA factors keep their initialisation
        (the update starts at zero). Nothing to do without an earlier stage."""
        if len(ctx.earlier) > 1:
            raise ValueError("features_from: languagebind starts from one earlier stage")
        if not ctx.earlier:
            return
        earlier = ctx.earlier[0].towers
        source = self.method_cfg.init_towers_from
        for m, tower in self.towers.items():
            name = m if m in earlier else source
            if name is None or name not in earlier:
                raise ValueError(
                    f"features_from: the earlier stage has no {m} tower and "
                    f"method.init_towers_from is {source!r} (its towers: {list(earlier)})"
                )
            copy_tower_weights(tower, earlier[name].state_dict(), f"{name} -> {m}")


@torch.no_grad()
def copy_tower_weights(tower: torch.nn.Module, weights: dict[str, Tensor], what: str) -> None:
    """Copy ``weights`` (a tower's state dict) into ``tower``'s tensors of the same names; a
    kernel with one input channel where the source has several takes their sum (an image
    filter applied to a grey picture). Every non-LoRA tensor of ``tower`` must be covered."""
    own = {k: v for k, v in tower.state_dict().items() if ".lora_" not in k}
    missing = sorted(set(own) - set(weights))
    if missing:
        raise ValueError(f"init_towers_from ({what}): the source lacks {missing[0]}")
    for name, target in own.items():
        value = weights[name]
        if value.ndim == 4 and target.ndim == 4 and target.shape[1] == 1 != value.shape[1]:
            value = value.sum(dim=1, keepdim=True)
        if value.shape != target.shape:
            raise ValueError(
                f"init_towers_from ({what}): {name} has shape {tuple(value.shape)} in the "
                f"source and {tuple(target.shape)} here"
            )
        target.copy_(value)
