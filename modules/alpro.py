"""ALPRO (Li, Li, Niebles, Xiong & Hoi, "Align and Prompt: Video-and-Language Pre-training with
Entity Prompts", CVPR 2022; official code ``salesforce/ALPRO``).

A video tower and a text tower, plus a small multimodal *fusion encoder* reading the text tokens
and the video tokens together. Four losses, all of weight 1 (``L = L_vtc + L_vtm +
L_mlm + L_pem``):

- **VTC**: symmetric InfoNCE between the L2-normalised pooled embeddings,
  learnable temperature initialised at 0.07 (:func:`~modules.losses.contrastive.clip_loss`,
  positives by ``item_id``);
- **VTM**: a 2-way head on the fusion encoder's first (text ``<cls>``) position, on
  the positive pairs and, per video, one hard negative caption drawn with probability
  ``softmax(sim)`` over the non-positive captions (and per caption one hard negative video);
- **MLM**: 15 % of the caption tokens masked (BERT's 80 / 10 / 10 replacement), the masked
  caption's tokens fused with the clip's video tokens, the fused text positions predict the
  original words;
- **PEM**: a *prompter*, a separate video-text dual tower trained with VTC
  only and then frozen (the teacher, ``teacher_from`` an earlier stage), embeds every entity
  under 12 templates ("A video of a {}.", ...; their mean is the entity's prompt feature). For a
  random spatial crop of each clip its soft entity label is
  ``q = softmax(f_crop . P^T / tau_p)``; crops whose max probability is below 0.2 are ignored.
  The model predicts ``p = softmax(MLP(mean of the fusion encoder's video positions))``, the
  MLP ``D -> 2D -> ReLU -> K`` as the code's ``768 -> 1536 -> 1000``; ``L_pem = -sum q log p``.

No section or equation numbers are cited: the paper's text was not in reach, the code was.

Choices (methods/part2.md Sec. 61, checked against ``salesforce/ALPRO`` ``alpro_models.py``):

- the PEM confidence rule compares the max probability with 0.2, as the code's comment intends
  (the code compares the argmax *index*; see modules/losses/alpro.py);
- VTM's hard negatives are drawn from the *global* batch (the code draws from the local one);
  with one process the two agree, and drawing globally keeps a DDP step equal to the
  one-process step. MLM and PEM average over the global batch's masked tokens / confident crops;
- every random draw (masked tokens, crop boxes, hard negatives) is seeded per sample by its
  ``index`` and the global step, so gradient caching and DDP replay the same draws;
- the fusion encoder is single-stream self-attention over ``[text tokens; video tokens]`` with
  a type embedding (ALPRO's BERT fusion layers use self- and cross-attention);
- the [MASK] token is the tokenizer's ``<unk>`` (the word-level tokenizer has no [MASK]); the
  MLM head is untied from the word embeddings;
- ``prompter_temperature`` is a fixed tau_p (default 0.07, VTC's initial value): the teacher
  hook freezes the prompter's towers, not its learned temperature.

Scoped down (and why):

- tiny towers (the video tower of experiments/video_clip.yaml, 2 fusion layers instead of 6);
- entities are the data's own vocabulary (``entity_words``: on the moving shapes, the 30
  "<colour> <shape>" names) instead of the 1 000 most frequent nouns of WebVid/CC3M;
- the video tower's tokens are per frame, not per patch, so the crop's features cannot be read
  off the full clip's patch grid: the model encodes the crop itself (resized to the frame size,
  as the prompter does) and the PEM head reads the fusion encoder's outputs for that crop
  (with the caption). PEM still trains the video tower and fusion encoder to name the entities
  of a region; it does not tie a region of the *full* clip's tokens to its entity;
- evaluation: the PEM head's entity prediction on whole clips, fused with an empty caption (the
  ``<cls>`` token only, so the caption cannot give the answer), marginalised over the words of
  each ``entity_words`` task, is scored by the ``classifier`` evaluator against the data's
  labels (``classifier/video/shape/accuracy``: the first event's object on the moving shapes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.base import DualTowerModule, MethodConfig
from modules.distributed import gather_no_grad, gather_with_grad, world_size
from modules.losses.alpro import (
    entity_prompt_features,
    entity_pseudo_labels,
    masked_token_mean,
    pem_loss,
    sample_hard_negatives,
    vtm_loss,
)
from modules.losses.contrastive import clip_loss
from modules.registry import METHODS
from modules.towers.layers import TransformerConfig, transformer_encoder
from modules.towers.output import TowerOutput
from modules.towers.tokenizer import SPECIALS, UNK, WordTokenizer

#: ALPRO's prompt templates for video inputs (``get_video_prompt_templates``; paper Table 8).
VIDEO_TEMPLATES = (
    "A footage of a {}.",
    "A footage of the {}.",
    "A footage of one {}.",
    "A video of a {}.",
    "A video of the {}.",
    "A video of one {}.",
    "A portrait of a {}.",
    "A portrait of the {}.",
    "A portrait of one {}.",
    "A video footage of a {}.",
    "A video footage of the {}.",
    "A video footage of one {}.",
)
#: Salts of the per-sample random draws (one stream per purpose).
_MASK, _CROP, _NEG_TEXT, _NEG_VIDEO = range(4)
_IGNORE = -100


@dataclass
class ALPROConfig(MethodConfig):
    name: str = "alpro"
    # entity vocabulary: task -> its words in label-id order; the entities are every combination
    # in task order ("red circle"); a task that is also a data label is evaluated
    entity_words: dict[str, list[str]] = field(default_factory=dict)
    templates: list[str] = field(default_factory=lambda: list(VIDEO_TEMPLATES))
    fusion_depth: int = 2  # paper: 6 BERT layers
    fusion_heads: int = 4
    mlm_probability: float = 0.15
    crop_scale: tuple[float, float] = (0.4, 0.7)  # crop side as a fraction of the frame side
    confidence: float = 0.2  # PEM ignores crops whose prompter max probability is below this
    prompter_temperature: float = 0.07
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"vtc": 1.0, "vtm": 1.0, "mlm": 1.0, "pem": 1.0}
    )

    def __post_init__(self) -> None:
        if not self.entity_words or any(len(w) < 1 for w in self.entity_words.values()):
            raise ValueError("entity_words: name the entity vocabulary (task -> words)")
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ValueError("templates: need at least one template, each with '{}'")
        if self.fusion_depth < 1 or self.fusion_heads < 1:
            raise ValueError("fusion_depth and fusion_heads must be positive")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability: must be in (0, 1), got {self.mlm_probability}")
        low, high = self.crop_scale
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"crop_scale: need 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence: must be in [0, 1], got {self.confidence}")
        if self.prompter_temperature <= 0:
            raise ValueError("prompter_temperature: must be positive")

    @property
    def entities(self) -> list[str]:
        return [" ".join(words) for words in product(*self.entity_words.values())]


def sample_generators(index: Tensor, step: int, salt: int) -> list[torch.Generator]:
    """One CPU generator per sample, seeded by (sample index, global step, purpose)."""
    return [
        torch.Generator().manual_seed((int(i) * 1_000_003 + step * 7_919 + salt) % 2**62)
        for i in index.tolist()
    ]


def mask_tokens(
    ids: Tensor,
    valid: Tensor,
    generators: list[torch.Generator],
    probability: float,
    mask_id: int,
    first_word: int,
    vocab_size: int,
) -> tuple[Tensor, Tensor]:
    """BERT masking of the word tokens (``valid``, not position 0, the ``<cls>``): each chosen
    with ``probability``, then 80 % -> ``mask_id``, 10 % -> a random word, 10 % kept.
    Returns (masked ids, labels: the original id where chosen, -100 elsewhere)."""
    masked, labels = ids.clone(), torch.full_like(ids, _IGNORE)
    for row, g in enumerate(generators):
        u = torch.rand(ids.shape[1], generator=g)
        action = torch.rand(ids.shape[1], generator=g)
        words = torch.randint(first_word, vocab_size, (ids.shape[1],), generator=g)
        chosen = (u < probability).to(ids.device) & valid[row]
        chosen[0] = False
        labels[row, chosen] = ids[row, chosen]
        to_mask = chosen & (action < 0.8).to(ids.device)
        to_random = chosen & ((action >= 0.8) & (action < 0.9)).to(ids.device)
        masked[row, to_mask] = mask_id
        masked[row, to_random] = words.to(ids.device)[to_random]
    return masked, labels


def random_crops(
    video: Tensor, generators: list[torch.Generator], scale: tuple[float, float]
) -> Tensor:
    """Each clip [T, C, S, S] of ``video`` cropped to one random square box (the same in every
    frame; side a uniform fraction in ``scale`` of S) and resized back to S x S (bilinear)."""
    size = video.shape[-1]
    out = []
    for clip, g in zip(video, generators, strict=True):
        fraction = scale[0] + (scale[1] - scale[0]) * torch.rand((), generator=g).item()
        side = max(2, round(fraction * size))
        x0, y0 = (int(torch.randint(0, size - side + 1, (), generator=g)) for _ in range(2))
        box = clip[..., y0 : y0 + side, x0 : x0 + side]
        out.append(F.interpolate(box, size=(size, size), mode="bilinear", align_corners=False))
    return torch.stack(out)


class FusionEncoder(nn.Module):
    """Self-attention over ``[text tokens; video tokens]`` (type embeddings added), pre-norm,
    final LayerNorm: the multimodal encoder."""

    def __init__(self, width: int, depth: int, heads: int) -> None:
        super().__init__()
        self.types = nn.Parameter(torch.randn(2, width) * 0.02)
        self.encoder = transformer_encoder(TransformerConfig(width=width, depth=depth, heads=heads))
        self.norm = nn.LayerNorm(width)

    def forward(self, text: Tensor, text_mask: Tensor, video: Tensor) -> Tensor:
        """[N, L + T, D] from text tokens [N, L, D] (``text_mask`` True where real) and video
        tokens [N, T, D]; the text positions come first."""
        x = torch.cat([text + self.types[0], video + self.types[1]], dim=1)
        padding = torch.cat(
            [~text_mask, torch.zeros(video.shape[:2], dtype=torch.bool, device=video.device)], 1
        )
        return self.norm(self.encoder(x, src_key_padding_mask=padding))


@METHODS.register("alpro", ALPROConfig)
class ALPRO(DualTowerModule):
    """VTC + VTM + MLM + PEM over a video tower, a text tower and a fusion encoder; the frozen
    prompter is the teacher (``teacher_from``)."""

    loss_terms = ("vtc", "vtm", "mlm", "pem")
    requires_teacher = True
    #: the training losses need masked captions and crops that evaluation batches do not build
    loss_on_eval = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg: ALPROConfig = self.method_cfg
        self.item_side, self.caption_side = self.pair
        if self.caption_side != "text" or not isinstance(self.tokenizer, WordTokenizer):
            raise ValueError(
                f"alpro needs a (video, text) pair with the word-level text tower (its <unk> is "
                f"the [MASK] token), got {list(self.pair)}"
            )
        dim = self.hparams["model"]["embed_dim"]
        if dim % cfg.fusion_heads:
            raise ValueError(f"fusion_heads: {cfg.fusion_heads} does not divide embed_dim {dim}")
        self.entities = cfg.entities
        self.fusion = FusionEncoder(dim, cfg.fusion_depth, cfg.fusion_heads)
        self.vtm_head = nn.Linear(dim, 2)
        vocab = self.tokenizer.vocab_size
        self.mlm_head = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim), nn.Linear(dim, vocab)
        )
        self.pem_head = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, len(self.entities))
        )

    # ---------------------------------------------------------------- inputs of the losses

    def masked_captions(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """(masked caption ids, MLM labels) of ``batch``, drawn per sample."""
        return mask_tokens(
            batch["text_ids"],
            batch["text_mask"],
            sample_generators(batch["index"], self.global_step, _MASK),
            self.method_cfg.mlm_probability,
            mask_id=SPECIALS.index(UNK),
            first_word=len(SPECIALS),
            vocab_size=self.tokenizer.vocab_size,
        )

    def crops(self, batch: dict[str, Any]) -> Tensor:
        """One random crop of every clip of ``batch``, drawn per sample."""
        generators = sample_generators(batch["index"], self.global_step, _CROP)
        return random_crops(batch[self.item_side], generators, self.method_cfg.crop_scale)

    def encode(self, batch: dict[str, Any]) -> dict[str, TowerOutput]:
        """Both towers on the batch; in training also the text tower on the masked captions
        (``text_masked``) and the video tower on the crops (``video_crop``)."""
        outputs = super().encode(batch)
        if self.training:
            masked, _ = self.masked_captions(batch)
            text = self.towers[self.caption_side]
            outputs["text_masked"] = text({"text_ids": masked, "text_mask": batch["text_mask"]})
            video = self.towers[self.item_side]
            outputs["video_crop"] = video({self.item_side: self.crops(batch)})
        return outputs

    @torch.no_grad()
    def prompter_labels(self, crops: Tensor) -> tuple[Tensor, Tensor]:
        """The frozen prompter's soft entity labels of ``crops`` and which are confident."""
        cfg: ALPROConfig = self.method_cfg
        prompts = [t.format(e) for e in self.entities for t in cfg.templates]
        ids, mask = self.tokenizer.encode(prompts)
        teacher_text = self.teacher[self.caption_side]
        embedded = teacher_text(
            {"text_ids": ids.to(crops.device), "text_mask": mask.to(crops.device)}
        )
        entities = entity_prompt_features(
            self.normalized(self.caption_side, embedded), len(cfg.templates)
        )
        teacher_video = self.teacher[self.item_side]
        features = self.normalized(self.item_side, teacher_video({self.item_side: crops}))
        return entity_pseudo_labels(
            features, entities.to(features.dtype), 1.0 / cfg.prompter_temperature, cfg.confidence
        )

    # ---------------------------------------------------------------- losses

    def matching_logits(self, text: TowerOutput | tuple[Tensor, Tensor], video: Tensor) -> Tensor:
        """VTM logits [N, 2] at the fusion encoder's first (text ``<cls>``) position."""
        tokens, mask = (text.tokens, text.mask) if isinstance(text, TowerOutput) else text
        return self.vtm_head(self.fusion(tokens, mask, video)[:, 0])

    def entity_logits(self, text_tokens: Tensor, text_mask: Tensor, video: Tensor) -> Tensor:
        """PEM logits [N, K] from the mean of the fusion encoder's video positions."""
        fused = self.fusion(text_tokens, text_mask, video)
        return self.pem_head(fused[:, text_tokens.shape[1] :].mean(dim=1))

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        video, text = outputs[self.item_side], outputs[self.caption_side]
        v, t = self.normalized(self.item_side, video), self.normalized(self.caption_side, text)
        ids = batch["item_id"]
        terms = {"vtc": clip_loss(v, t, self.scale, ids=ids)}
        terms["vtm"] = self.vtm(batch, video, text, v, t)
        # MLM: masked caption fused with its clip; the text positions predict the words
        _, labels = self.masked_captions(batch)
        masked = outputs["text_masked"]
        fused = self.fusion(masked.tokens, masked.mask, video.tokens)[:, : labels.shape[1]]
        per_token = F.cross_entropy(
            self.mlm_head(fused).transpose(1, 2), labels, ignore_index=_IGNORE, reduction="none"
        )
        terms["mlm"] = masked_token_mean(per_token, labels != _IGNORE)
        # PEM: the prompter's soft entity labels of the crops, predicted from the fused crop
        targets, confident = self.prompter_labels(self.crops(batch))
        crop = outputs["video_crop"]
        logits = self.entity_logits(text.tokens, text.mask, crop.tokens)
        terms["pem"] = pem_loss(logits, targets.to(logits.dtype), confident)
        return terms

    def vtm(
        self, batch: dict[str, Any], video: TowerOutput, text: TowerOutput, v: Tensor, t: Tensor
    ) -> Tensor:
        """VTM on the positive pairs and one hard negative per video and per caption, drawn
        from the global batch with probability softmax(sim) over the non-positives."""
        ids = batch["item_id"]
        all_ids = gather_no_grad(ids)
        positives = ids[:, None] == all_ids[None, :]
        scale = self.scale.detach()
        neg_text = sample_hard_negatives(
            scale * v @ gather_no_grad(t).T,
            positives,
            sample_generators(batch["index"], self.global_step, _NEG_TEXT),
        )
        neg_video = sample_hard_negatives(
            scale * t @ gather_no_grad(v).T,
            positives,
            sample_generators(batch["index"], self.global_step, _NEG_VIDEO),
        )
        text_tokens, text_mask = text.tokens, text.mask
        if world_size() > 1:  # ranks pad captions to their own longest: pad to a common length
            length = self.tokenizer.max_len
            text_tokens = F.pad(text_tokens, (0, 0, 0, length - text_tokens.shape[1]))
            text_mask = F.pad(text_mask, (0, length - text_mask.shape[1]), value=False)
        all_tokens, all_masks = gather_with_grad(text_tokens), gather_no_grad(text_mask)
        all_video = gather_with_grad(video.tokens)
        positive = self.matching_logits((text_tokens, text_mask), video.tokens)
        negative = torch.cat(
            [
                self.matching_logits((all_tokens[neg_text], all_masks[neg_text]), video.tokens),
                self.matching_logits((text_tokens, text_mask), all_video[neg_video]),
            ]
        )
        return vtm_loss(positive, negative)

    # ---------------------------------------------------------------- evaluation

    def evaluators(self) -> dict[str, dict[str, Any]]:
        """The PEM head's entity accuracy per labelled ``entity_words`` task."""
        return {"classifier": {}}

    def eval_outputs(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, Tensor]:
        """``logits/video/<task>``: the PEM head on whole clips fused with an empty caption
        (``<cls>`` only), log-marginalised onto each labelled task's words."""
        tasks = list(self.method_cfg.entity_words)
        labelled = [task for task in tasks if f"label/{task}" in batch]
        if not labelled:
            return {}
        video = outputs[self.item_side].tokens
        ids, mask = self.tokenizer.encode([""] * len(video))
        empty = self.towers[self.caption_side](
            {"text_ids": ids.to(video.device), "text_mask": mask.to(video.device)}
        )
        logits = self.entity_logits(empty.tokens, empty.mask, video)
        grid = logits.log_softmax(dim=1).view(
            len(video), *(len(w) for w in self.method_cfg.entity_words.values())
        )
        out = {}
        for task in labelled:
            axis = 1 + tasks.index(task)
            others = [d for d in range(1, grid.ndim) if d != axis]
            out[f"logits/{self.item_side}/{task}"] = grid.logsumexp(dim=others) if others else grid
        return out
