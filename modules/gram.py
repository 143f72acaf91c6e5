"""GRAM: Gramian Representation Alignment Measure (Cicchetti, Grassucci, Sigillo & Comminiello,
"Gramian Multimodal Representation Learning and Alignment", ICLR 2025; methods/part1.md
Sec. 24; official code ``ispamm/GRAM``, ``model/gram.py`` ``forward_ret``).

k >= 3 modalities are aligned at once: the anchor ``a_i`` (text) and the tuple
``(m^1_j, ..., m^{k-1}_j)`` of the other modalities of sample j, all L2-normalised, span a
parallelotope of volume ``V_ij = sqrt(|det G_ij|)`` (G the k x k Gram matrix; official
``volume_computation``); a matching tuple collapses it to 0. The loss (``objective: volume``) is the
symmetric volume contrastive loss with label smoothing 0.1 and the volumes divided by a plain
learnable tau (:func:`~modules.losses.gram.gram_loss`):

    L_GRAM = 1/2 [CE(-V / tau, diag) + CE(-V' / tau, diag)],   V'_ij = V(a_j, tuple_i).

``objective: anchored_pairwise`` is the paper's baseline, pairwise contrastive learning between
the anchor and each other modality (VAST's ``loss_itc`` over its text-anchored subtasks):

    L_pair = (1 / (k - 1)) sum_m CLIP(a, m^m)

at the platform's learnable temperature (``model.temperature``, stored as log(1/T)) with the
same label smoothing. The mean (not the sum) over the k - 1 pairs: VAST averages its subtask
losses, it keeps the baseline's loss on the scale of one CLIP loss (and of the volume loss,
one symmetric cross-entropy), and under AdamW the two reductions give the same updates up to
``eps``, so the choice does not favour either objective.

Choices (⚠ of the spec, official code read):

- tau (``objective: volume``) is GRAM's ``contra_temp``: the parameter is tau itself (init
  0.07), the logits ``-V / tau``, not ``exp``-parametrised. The official code never clamps it;
  here :class:`DivisorTemperature` keeps it in [1 / model.max_logit_scale, max_temperature]
  after every optimiser step (the bounds of the platform's temperature), so a plain divisor
  moved by Adam in steps of ~lr can never reach 0 or change sign, which would turn the loss
  into one that maximises the volume of matching tuples. Inside the bounds it is the official
  divisor. The platform's CLIP temperature is not used by this objective and is frozen.
- ``eps`` inside the square root: 0 as the official code (``method.eps: 1e-8``, the spec's
  general form, keeps the gradient finite at V = 0).
- positives: equal ``item_id`` (several captions of one item are positives, never negatives),
  as every method of the platform; with one caption per item this is the official diagonal.
- both objectives are scored by cosine retrieval over every pair (the data's default) and by
  volume retrieval, anchor -> tuple and tuple -> anchor ranked by -V
  (callbacks/volume_retrieval.py), GRAM's headline protocol.

The volume is blind to the sign of each vector (flipping one flips a column of A and leaves
``|det G|`` unchanged), so nothing in the volume objective makes a pair's cosine positive. The
paper starts from pretrained, cosine-aligned encoders (VAST); trained from scratch, GRAM can
align a modality as the negative of its caption (on shapes_sounds: audio-text cosine -0.53 on
average, cosine retrieval of the true pair last, volume retrieval unaffected).

Scoped out: DAM, the data-anchor matching head (a BERT fusion encoder cross-attending from the
caption to the tuple's token features, a binary match head trained on hard negatives drawn from
softmax(-V), loss weight ``itm_ratio``; in ``forward_ret``, part of the training loss): the
platform has no fusion encoder, and the comparison here is between the two embedding
objectives, scored on the embeddings alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from modules.base import AlignmentModule, MethodConfig, Temperature
from modules.losses.contrastive import clip_loss
from modules.losses.gram import gram_loss
from modules.registry import METHODS
from modules.towers.output import TowerOutput

OBJECTIVES = ("volume", "anchored_pairwise")


@dataclass
class GRAMConfig(MethodConfig):
    name: str = "gram"
    anchor: str = "text"  # the modality every volume (and every baseline pair) contains
    # volume: GRAM's loss | anchored_pairwise: mean CLIP loss between the anchor and each other
    objective: str = "volume"
    label_smoothing: float = 0.1  # both objectives (official: 0.1 for the volume and for VAST)
    tau: float = 0.07  # initial divisor of the volumes (official contra_temp)
    max_temperature: float = 1.0  # upper clamp of tau; the lower one is 1/model.max_logit_scale
    eps: float = 0.0  # inside the square root of the volume (official: none)
    loss_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"method.objective must be one of {OBJECTIVES}, got {self.objective}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(
                f"method.label_smoothing must be in [0, 1), got {self.label_smoothing}"
            )
        if not 0.0 < self.tau <= self.max_temperature:
            raise ValueError(
                f"method.tau must be in (0, max_temperature={self.max_temperature}], got {self.tau}"
            )
        if self.eps < 0:
            raise ValueError(f"method.eps must be >= 0, got {self.eps}")


class DivisorTemperature(Temperature):
    """A temperature whose parameter is tau itself (GRAM's ``contra_temp``): logits are
    ``-V / tau``. :meth:`clamp_` (called by the base after every optimiser step, as for every
    :class:`~modules.base.Temperature`) keeps tau in [1 / max_scale, max_temperature]."""

    def __init__(self, temperature: float, max_scale: float, max_temperature: float) -> None:
        nn.Module.__init__(self)  # no log(1/T) parameter: tau is stored as is
        self.min_tau, self.max_tau = 1.0 / max_scale, max_temperature
        if not self.min_tau <= temperature <= self.max_tau:
            raise ValueError(
                f"tau {temperature} is outside [1 / max_scale, max_temperature] = "
                f"[{self.min_tau}, {self.max_tau}]"
            )
        self.value = nn.Parameter(torch.tensor(float(temperature)))

    @property
    def scale(self) -> Tensor:
        """The logit scale 1/tau."""
        return 1.0 / self.value

    @torch.no_grad()
    def clamp_(self) -> None:
        self.value.clamp_(self.min_tau, self.max_tau)


@METHODS.register("gram", GRAMConfig)
class GRAM(AlignmentModule):
    """The volume contrastive loss of the anchor against the tuple of the other modalities
    (``objective: volume``), or the mean of anchor-to-modality CLIP losses
    (``anchored_pairwise``); both evaluated by cosine and by volume retrieval."""

    num_encoders = None  # any k >= 3, checked in __init__
    loss_terms = OBJECTIVES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg: GRAMConfig = self.method_cfg
        if len(self.modalities) < 3:
            raise ValueError(
                f"GRAM aligns at least 3 modalities; the data has {list(self.modalities)}"
            )
        if cfg.anchor not in self.modalities:
            raise ValueError(
                f"method.anchor {cfg.anchor!r} is not among the data's {list(self.modalities)}"
            )
        #: The non-anchor modalities, in the data's order (the volume does not depend on it).
        self.others = tuple(m for m in self.modalities if m != cfg.anchor)
        self.tau: DivisorTemperature | None = None
        if cfg.objective == "volume":
            self.tau = DivisorTemperature(
                cfg.tau, self.hparams["model"]["max_logit_scale"], cfg.max_temperature
            )
            # the CLIP temperature takes no part in this objective (and would be an unused
            # parameter under DDP)
            self.temperature.log_scale.requires_grad_(False)

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        cfg: GRAMConfig = self.method_cfg
        anchor = self.normalized(cfg.anchor, outputs[cfg.anchor])
        others = [self.normalized(m, outputs[m]) for m in self.others]
        ids = batch["item_id"]
        if self.tau is not None:
            loss = gram_loss(anchor, others, self.tau.value, cfg.label_smoothing, ids, cfg.eps)
            return {"volume": loss}
        pairs = [
            clip_loss(anchor, other, self.scale, ids=ids, label_smoothing=cfg.label_smoothing)
            for other in others
        ]
        return {"anchored_pairwise": torch.stack(pairs).mean()}

    def scalars(self, outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        """``tau``: the temperature the objective divides by (GRAM's tau, or 1/scale of the
        CLIP temperature for the baseline), so both runs log the same key."""
        return {"tau": self.tau.value if self.tau is not None else 1.0 / self.scale}

    def evaluators(self) -> dict[str, dict[str, Any]]:
        """Volume retrieval (anchor -> tuple, tuple -> anchor by -V) for both objectives."""
        return {"volume_retrieval": {"anchor": self.method_cfg.anchor}}
