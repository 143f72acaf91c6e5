"""CLIP🚀 (Fini, Astolfi, Romero-Soriano, Verbeek & Drozdzal 2023, "Improved baselines for
vision-language pre-training", arXiv 2305.08675) and its non-contrastive add-ons BarLIP,
SiamLIP and SwALIP; the objective follows the official ``losses.py``/``models.py``
(facebookresearch/clip-rocket), see modules/losses/clip_rocket.py.

Besides the (image, caption) pair, every step makes A augmented views of each image and each
caption inside the module (modules/views.py: random resized crops with faint noise; EDA on
token ids: stop-word removal, random swap, random deletion). They pass through the same towers,
then through separate "local" projectors (one per modality, on the tower's pooled output) and
are compared at a separate learnable logit scale (initial 1/0.1, as ``l2l_logit_scale``):

- ``cl2l`` (CLIP🚀, ``CL2LLoss``): ``L = [CLIP_g + A mean_{a,b} CLIP_eps(h^I_a, h^T_b)] / (1+A)``,
  times 2 with ``reduction: sum`` (the paper's runs): global InfoNCE with ``label_smoothing``
  (0 in the official code), local InfoNCE over all A x A view pairs with
  ``local_label_smoothing`` (0.1).
- ``barlip`` (``BarLIPLoss``): Barlow Twins (lambda 5e-3, scale 0.025) between image and text
  projections of 3-layer BatchNorm MLPs, global pair and view pairs.
- ``siamlip`` (``SiamLIPLoss``): ``2 - 2 cos(p, sg(v))`` with a projector (last BatchNorm without
  affine) and an image->text and a text->image predictor.
- ``swalip`` (``SwALIPLoss``): swapped Sinkhorn targets (epsilon 0.05, 3 iterations) between the
  local projections, the other modality's batch acting as prototypes; the official weight 0.2 is
  its ``loss_weights`` entry.

Each add-on is a loss term switched on by a non-zero ``method.loss_weights`` entry; terms with
weight 0 are neither built nor computed (no idle parameters under DDP). Evaluation and zero-shot
read the global embeddings (``embedding`` is the base's). The add-ons' heads run on the whole
batch gathered across ranks with gradients, so their BatchNorm statistics are global and the
loss is exact under DDP and gradient caching.

Scoped down: the projectors act on the towers' pooled (already projected) outputs, not on
backbone features; the local projector is the platform's ``projection_head`` (``mlp``:
Linear-GELU-Linear, no BatchNorm) instead of the official 3-layer 4096-wide BatchNorm MLP; the
global caption is not augmented (the official weak stop-word removal); no synonym replacement,
text dropout in local mode or multi-crop; BYOLIP's momentum encoder is not implemented (SiamLIP
only); projectors are shared between global and views (the official default,
``separate_proj_child`` off).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modules.base import DualTowerModule, MethodConfig, Temperature
from modules.distributed import gather_with_grad, rank, world_size
from modules.losses.clip_rocket import barlip_loss, cl2l_loss, siamlip_loss, swalip_loss
from modules.registry import METHODS
from modules.towers.layers import projection_head
from modules.towers.output import TowerOutput
from modules.views import ImageViewConfig, TextViewConfig, image_view, stop_word_ids, text_view

MODALITIES = ("image", "text")


@dataclass
class CLIPRocketConfig(MethodConfig):
    name: str = "clip_rocket"
    num_views: int = 2  # A: augmented views per modality
    reduction: str = "sum"  # "sum": 2 x the averaged loss (the paper's runs), or "mean"
    label_smoothing: float = 0.0  # global InfoNCE
    local_label_smoothing: float = 0.1  # view-pair InfoNCE (0 for SwALIP, as in the paper)
    local_temperature: float = 0.1  # initial 1/scale of the separate local logit scale
    local_projector: str = "mlp"  # projection_head kind: linear | mlp
    image_views: ImageViewConfig = field(default_factory=ImageViewConfig)
    text_views: TextViewConfig = field(default_factory=TextViewConfig)
    barlip_off_diagonal: float = 5e-3
    barlip_scale: float = 0.025
    barlip_dim: int = 256
    barlip_hidden: int = 256
    siamlip_dim: int = 128
    siamlip_hidden: int = 256
    swalip_epsilon: float = 0.05
    swalip_iterations: int = 3
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"cl2l": 1.0, "barlip": 0.0, "siamlip": 0.0, "swalip": 0.0}
    )

    def __post_init__(self) -> None:
        if self.num_views < 0:
            raise ValueError(f"num_views: must be >= 0, got {self.num_views}")
        if self.reduction not in ("sum", "mean"):
            raise ValueError(f"reduction: 'sum' or 'mean', got {self.reduction!r}")
        if self.local_temperature <= 0:
            raise ValueError(f"local_temperature: must be > 0, got {self.local_temperature}")


def _mlp(dims: list[int], bias: bool = True, last_norm: bool = False) -> nn.Sequential:
    """Linear-BatchNorm-ReLU blocks, then a last Linear (and a BatchNorm if ``last_norm``)."""
    layers: list[nn.Module] = []
    for d_in, d_out in zip(dims[:-2], dims[1:-1], strict=True):
        layers += [nn.Linear(d_in, d_out, bias=bias), nn.BatchNorm1d(d_out), nn.ReLU()]
    layers.append(nn.Linear(dims[-2], dims[-1], bias=bias))
    if last_norm:
        layers.append(nn.BatchNorm1d(dims[-1]))
    return nn.Sequential(*layers)


def _own_rows(x: torch.Tensor) -> torch.Tensor:
    """This rank's rows (rank*b:(rank+1)*b) of a tensor computed on the gathered batch."""
    return x.chunk(world_size())[rank()]


@METHODS.register("clip_rocket", CLIPRocketConfig)
class CLIPRocket(DualTowerModule):
    """CLIP🚀: global + view-pair InfoNCE, optionally BarLIP / SiamLIP / SwALIP terms."""

    loss_terms = ("cl2l", "barlip", "siamlip", "swalip")
    #: views are random draws: exactness checks compare the global terms
    deterministic_overrides = {"num_views": 0}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.method_cfg
        if self.pair != MODALITIES:
            raise ValueError(f"clip_rocket makes image and text views; data has {self.modalities}")
        weights = cfg.loss_weights
        self.active = tuple(t for t in self.loss_terms if weights.get(t, 1.0))
        if "swalip" in self.active and cfg.num_views < 1:
            raise ValueError("the swalip term compares views: set num_views >= 1")
        dim = int(self.hparams["model"]["embed_dim"])
        self.register_buffer(
            "stop_ids",
            torch.tensor(stop_word_ids(self.tokenizer.vocab), dtype=torch.long),
            persistent=False,
        )
        if cfg.num_views and {"cl2l", "swalip"} & set(self.active):
            self.local_heads = nn.ModuleDict(
                {side: projection_head(dim, dim, cfg.local_projector) for side in MODALITIES}
            )
            self.local_temperature = Temperature(
                cfg.local_temperature, max_scale=self.hparams["model"]["max_logit_scale"]
            )
        if "barlip" in self.active:
            widths = [dim, cfg.barlip_hidden, cfg.barlip_hidden, cfg.barlip_dim]
            self.barlip_heads = nn.ModuleDict(
                {side: _mlp(widths, last_norm=True) for side in MODALITIES}
            )
        if "siamlip" in self.active:
            projector = [dim, cfg.siamlip_hidden, cfg.siamlip_dim]
            predictor = [cfg.siamlip_dim, cfg.siamlip_hidden, cfg.siamlip_dim]
            self.siamlip_projectors = nn.ModuleDict(
                {
                    side: nn.Sequential(
                        _mlp(projector, bias=False), nn.BatchNorm1d(cfg.siamlip_dim, affine=False)
                    )
                    for side in MODALITIES
                }
            )
            # keyed by the predicting modality: image -> text and text -> image
            self.siamlip_predictors = nn.ModuleDict({side: _mlp(predictor) for side in MODALITIES})

    @property
    def local_scale(self) -> torch.Tensor:
        """The view pairs' logit scale (its own learnable temperature)."""
        return self.local_temperature.scale

    # ------------------------------------------------------------------ views

    def encode(self, batch: dict[str, Any]) -> dict[str, TowerOutput]:
        """The towers' outputs for the batch and for ``num_views`` random views of it
        (``image/view<a>``, ``text/view<a>``: pooled only)."""
        outputs = super().encode(batch)
        image_tower, text_tower = self.towers["image"], self.towers["text"]
        key = getattr(image_tower, "key", "image")
        cfg = self.method_cfg
        for a in range(cfg.num_views):
            images = image_view(batch[key], cfg.image_views)
            ids, mask = text_view(
                batch["text_ids"], batch["text_mask"], self.stop_ids, cfg.text_views
            )
            outputs[f"image/view{a}"] = TowerOutput(image_tower({key: images}).pooled)
            outputs[f"text/view{a}"] = TowerOutput(
                text_tower({"text_ids": ids, "text_mask": mask}).pooled
            )
        return outputs

    def _views(self, outputs: dict[str, TowerOutput], side: str) -> list[torch.Tensor]:
        return [
            self.embedding(side, outputs[f"{side}/view{a}"])
            for a in range(self.method_cfg.num_views)
        ]

    # ------------------------------------------------------------------ losses

    def losses(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, torch.Tensor]:
        cfg = self.method_cfg
        image, text = (self.embedding(side, outputs[side]) for side in MODALITIES)
        views = {side: self._views(outputs, side) for side in MODALITIES}
        local = {}
        if hasattr(self, "local_heads"):
            local = {
                side: [F.normalize(self.local_heads[side](v), dim=-1) for v in views[side]]
                for side in MODALITIES
            }
        terms: dict[str, torch.Tensor] = {}
        if "cl2l" in self.active:
            terms["cl2l"] = cl2l_loss(
                F.normalize(image, dim=-1),
                F.normalize(text, dim=-1),
                local.get("image", []),
                local.get("text", []),
                self.scale,
                self.local_scale if local else 1.0,
                ids=batch["item_id"],
                label_smoothing=cfg.label_smoothing,
                local_label_smoothing=cfg.local_label_smoothing,
                reduction=cfg.reduction,
            )
        # the BatchNorm heads see the whole batch; the losses get this rank's rows of their output
        everyone = {}
        if {"barlip", "siamlip"} & set(self.active):
            everyone = {
                side: [gather_with_grad(z) for z in (global_, *views[side])]
                for side, global_ in zip(MODALITIES, (image, text), strict=True)
            }
        if "barlip" in self.active:
            z = {
                side: [_own_rows(self.barlip_heads[side](x)) for x in everyone[side]]
                for side in MODALITIES
            }
            terms["barlip"] = barlip_loss(
                z["image"][0],
                z["text"][0],
                z["image"][1:],
                z["text"][1:],
                cfg.barlip_off_diagonal,
                cfg.barlip_scale,
            )
        if "siamlip" in self.active:
            v = {
                side: [self.siamlip_projectors[side](x) for x in everyone[side]]
                for side in MODALITIES
            }
            p = {side: [self.siamlip_predictors[side](x) for x in v[side]] for side in MODALITIES}
            p, v = ({side: [_own_rows(x) for x in y[side]] for side in MODALITIES} for y in (p, v))
            terms["siamlip"] = siamlip_loss(
                (p["image"][0], p["text"][0]),
                (v["image"][0], v["text"][0]),
                (p["image"][1:], p["text"][1:]),
                (v["image"][1:], v["text"][1:]),
            )
        if "swalip" in self.active:
            terms["swalip"] = swalip_loss(
                local["image"],
                local["text"],
                self.local_scale,
                cfg.swalip_epsilon,
                cfg.swalip_iterations,
            )
        return terms

    def scalars(self, outputs: dict[str, TowerOutput]) -> dict[str, torch.Tensor]:
        """The view pairs' logit scale, when the method has one."""
        if hasattr(self, "local_temperature"):
            return {"local_logit_scale": self.local_scale.detach()}
        return {}
