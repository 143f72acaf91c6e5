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
- ``objective: mcip_text`` (``image_metric`` with ``class_weights: learned``): MCIP's released
  ``train_with_text.py``, ``0.75 · ArcFace(learned proxies) + 0.25 · multi-caption text ArcFace``
  (terms ``mcip_class`` and ``mcip_caption``, weighted by ``loss_weights``) against captions
  retrieved per training image (modules/losses/mcip.py has the equations and code references).
  Before training (``prepare_fit``) every training image is embedded by the stage's initial
  image tower and gets the ``caption_top_k = 20`` captions of a caption pool nearest to it by
  cosine, kept above ``caption_threshold = 0.27``; each step the margin goes on an image's own
  retrieved captions, the other images' retrieved captions of the (gathered) batch are its
  negatives, the target is uniform over its captions, plus ``max_negative_weight = 0.1`` times
  the max term.
- learned class proxies (both objectives) train at ``proxy_lr_multiplier`` x ``optim.lr``,
  100 as MCIP's ``base_lr*100`` for ``loss_module.parameters()`` in both ``train.py`` (2SFT)
  and ``train_with_text.py``.
  Deviations forced by the built-in data and this framework:

  - ⚠ caption pool: MCIP retrieves from an external, de-duplicated caption corpus (CC12M,
    ``12CCM_OClipL_text_*``) with precomputed features of a different, larger CLIP (OpenCLIP
    ViT-L); here the pool is the training split's own captions as ``prepare_fit``'s loader
    yields them (one per image per pass with ``data.train_pairs: image``, every caption with
    ``caption``), de-duplicated by token ids, and the retriever is this stage's initial towers
    (the pretrained CLIP this stage starts from). The 0.27 threshold is OpenCLIP-L's scale:
    ``prepare_fit`` logs ``mcip/captions_per_image`` and ``mcip/images_without_captions``.
  - ⚠ the caption embeddings are computed once before training (the text tower is frozen in
    ``image_metric``, so they equal MCIP's per-step ``no_grad`` ``encode_text``).
  - ⚠ evaluation batches (validation/test) have no retrieved captions: their loss is the class
    term alone (``val/loss`` = 0.75 x ArcFace).
  - ⚠ MCIP clips the image tower's and the proxies' gradients to norm 1 separately, decays both
    with weight decay 0.01 and ends its cosine at an absolute ``min_lr`` for both groups; here
    ``trainer.gradient_clip_val``, ``optim.weight_decay`` and ``optim.min_lr_ratio`` (relative,
    so the 100x ratio holds throughout) apply as configured.
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

from modules.base import DualTowerModule, FitContext, MethodConfig
from modules.clustering import combined_class
from modules.losses.contrastive import clip_loss
from modules.losses.mcip import multi_caption_arcface_loss, retrieve_captions
from modules.losses.metric_learning import MARGINS, margin_softmax_loss
from modules.registry import METHODS
from modules.towers.output import TowerOutput

PHASES = ("image_metric", "text_realign")
CLASS_WEIGHTS = ("learned", "pseudo_caption")
#: arcface: the ArcFace over classes alone; mcip_text: MCIP's train_with_text objective
OBJECTIVES = ("arcface", "mcip_text")
#: MCIP's learning-rate multiplier of its loss modules' parameters (the class proxies)
MCIP_PROXY_LR_MULTIPLIER = 100.0


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
    objective: str = "arcface"  # arcface | mcip_text (image_metric, class_weights: learned)
    # the learned class weights' learning rate / optim.lr (MCIP: 100 in train.py and
    # train_with_text.py)
    proxy_lr_multiplier: float = MCIP_PROXY_LR_MULTIPLIER
    # mcip_text: captions retrieved per training image, kept above this cosine
    caption_top_k: int = 20
    caption_threshold: float = 0.27
    max_negative_weight: float = 0.1
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {
            "metric": 1.0,
            "clip": 1.0,
            "mcip_class": 0.75,
            "mcip_caption": 0.25,
        }
    )

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("phase", self.phase, PHASES),
            ("class_weights", self.class_weights, CLASS_WEIGHTS),
            ("margin_kind", self.margin_kind, MARGINS),
            ("objective", self.objective, OBJECTIVES),
        ):
            if value not in allowed:
                raise ValueError(f"{name}: must be one of {allowed}, got {value!r}")
        if not self.labels:
            raise ValueError("labels: need at least one label")
        if self.objective == "mcip_text" and self.class_weights != "learned":
            raise ValueError("objective: mcip_text trains learned class proxies (class_weights)")
        if not self.proxy_lr_multiplier > 0:
            raise ValueError(
                f"proxy_lr_multiplier: must be positive, got {self.proxy_lr_multiplier}"
            )
        if self.caption_top_k < 1:
            raise ValueError(f"caption_top_k: must be at least 1, got {self.caption_top_k}")
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

    loss_terms = ("metric", "clip", "mcip_class", "mcip_caption")

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
        self.mcip = cfg.phase == "image_metric" and cfg.objective == "mcip_text"
        if self.mcip and self.caption_side != "text":
            raise ValueError("objective: mcip_text needs a text tower")
        # mcip_text (filled by prepare_fit, not saved): the caption pool's frozen text
        # embeddings [P, D], and per training item its retrieved captions [N, k] and which to keep
        self.register_buffer("caption_bank", torch.empty(0, 0), persistent=False)
        self.register_buffer("retrieved", torch.empty(0, 0, dtype=torch.long), persistent=False)
        self.register_buffer(
            "retrieved_keep", torch.empty(0, 0, dtype=torch.bool), persistent=False
        )
        self.pseudo_captions = (
            pseudo_captions(cfg.template, cfg.labels, self.names)
            if cfg.class_weights == "pseudo_caption"
            else []
        )

    def lr_multipliers(self) -> dict[str, float]:
        """The learned class proxies at ``proxy_lr_multiplier`` x ``optim.lr`` (MCIP)."""
        if self.class_weights is None:
            return {}
        return {"class_weights": self.method_cfg.proxy_lr_multiplier}

    def prepare_fit(self, ctx: FitContext) -> None:
        """``mcip_text``: retrieve each training image's captions from the training captions
        with the initial towers (MCIP ``create_pseudo_captions``; module docstring)."""
        super().prepare_fit(ctx)
        if not self.mcip:
            return
        cfg = self.method_cfg
        images, captions, ids = self._training_embeddings(ctx)
        unique = _first_occurrences(ids)
        bank = captions[unique]
        retrieved, keep = retrieve_captions(images, bank, cfg.caption_top_k, cfg.caption_threshold)
        device = self.caption_bank.device
        self.caption_bank = bank.to(device, self.dtype)
        self.retrieved, self.retrieved_keep = retrieved.to(device), keep.to(device)
        per_image = keep.sum(dim=1).double()
        ctx.log_metrics(
            {
                "mcip/caption_pool": float(len(unique)),
                "mcip/captions_per_image": per_image.mean().item(),
                "mcip/images_without_captions": (per_image == 0).double().mean().item(),
            }
        )

    @torch.no_grad()
    def _training_embeddings(self, ctx: FitContext) -> tuple[Tensor, Tensor, list[tuple[int, ...]]]:
        """(image embeddings [N, D] by item id, caption embeddings [M, D], their token ids
        without padding) of the training samples ``ctx.loader`` yields, L2-normalised, in
        eval mode."""
        was_training = self.training
        self.eval()
        images: Tensor | None = None
        captions, ids = [], []
        for batch in ctx.loader(None):
            batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            out = self.encode(batch)
            item = self.normalized(self.item_side, out[self.item_side]).float().cpu()
            if images is None:
                images = torch.zeros(ctx.num_items, item.shape[1])
            images[batch["item_id"].cpu()] = item
            captions.append(
                self.normalized(self.caption_side, out[self.caption_side]).float().cpu()
            )
            for row, valid in zip(batch["text_ids"].cpu(), batch["text_mask"].cpu(), strict=True):
                ids.append(tuple(row[valid].tolist()))
        self.train(was_training)
        if images is None:
            raise ValueError("objective: mcip_text needs training samples to retrieve captions")
        return images, torch.cat(captions), ids

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
        if self.mcip:
            return self.mcip_losses(batch, item, classes)
        weights = (
            self.class_weights
            if self.class_weights is not None
            else self.encode_texts(self.pseudo_captions)  # frozen text tower, no gradient
        )
        loss = margin_softmax_loss(
            item[known], weights, classes[known], cfg.scale, cfg.margin, cfg.margin_kind
        )
        return {"metric": loss}

    def mcip_losses(
        self, batch: dict[str, Any], item: Tensor, classes: Tensor
    ) -> dict[str, Tensor]:
        """MCIP ``train_with_text``: ArcFace on the learned proxies (``mcip_class``) and, in
        training, the multi-caption text ArcFace on the retrieved captions (``mcip_caption``);
        ``loss_weights`` 0.75 / 0.25 combine them."""
        cfg = self.method_cfg
        known = classes >= 0
        terms = {
            "mcip_class": margin_softmax_loss(
                item[known],
                self.class_weights,
                classes[known],
                cfg.scale,
                cfg.margin,
                cfg.margin_kind,
            )
        }
        if not self.training:  # evaluation items have no retrieved captions
            return terms
        if self.retrieved.numel() == 0:
            raise RuntimeError(
                "objective: mcip_text retrieves captions in prepare_fit; call it first"
            )
        rows = batch["item_id"].to(self.retrieved.device)
        terms["mcip_caption"] = multi_caption_arcface_loss(
            item,
            self.caption_bank[self.retrieved[rows]],
            self.retrieved_keep[rows],
            cfg.scale,
            cfg.margin,
            cfg.max_negative_weight,
            cfg.margin_kind,
        )
        return terms


def _first_occurrences(ids: list[tuple[int, ...]]) -> Tensor:
    """Indices of the first of each distinct caption (token ids), in order (MCIP
    ``find_unique_indices`` on caption strings)."""
    seen: set[tuple[int, ...]] = set()
    first = []
    for i, key in enumerate(ids):
        if key not in seen:
            seen.add(key)
            first.append(i)
    return torch.tensor(first, dtype=torch.long)
