"""CLOSE: Cross-modaL transfer On Semantic Embeddings (Gu, Clark & Kembhavi, "I Can't Believe
There's No Images! Learning Visual Tasks Using only Language Supervision", ICCV 2023).

A contrastive model puts an image and its caption near each other, so a head trained on *text*
embeddings alone can be applied to *image* embeddings. The modality gap between the two is
bridged by Gaussian noise during training (Sec. 3): with frozen towers,

    e = normalize(f_text(caption)),    e~ = normalize(e + eps),    eps ~ N(0, sigma^2 I_d),

and the head is trained on ``e~`` only; at test time it reads ``normalize(f_image(image))``,
without noise. No image is encoded during training.

Our small version (methods/part2.md section 37, "Dual-tower mapping"): the frozen towers are a
CLIP pre-trained on the embedded data (experiments/close.yaml chains the stages); instead of
T5 generating captions/answers, one classification head per data label (``label/shape``,
``label/color``, ``label/count``) is trained with cross-entropy on the noisy text embeddings.
Validation/test log the heads' accuracy (percent, like the zero-shot metrics) on image
embeddings (the zero-image transfer) and on text embeddings:
``<split>/classifier/<modality>/<label>/accuracy``.

Choices, checked against ``allenai/close``:

- noise as ``AddGuassianNoise(scale, renormalize=True)`` (``close/model/language_adapters.py``):
  ``x + randn_like(x) * sigma``, renormalised, applied only in training mode; eval is the
  identity; ``x`` is the L2-normalised text feature (``clip_t5_model.py`` ``_encode``);
- ``noise_std`` is per dimension. The paper's values (0.04 VQA, 0.08 visual entailment, 0.12
  captioning) are for d = 768 (ViT-L/14); the default here is 0.08, the classification task.
  The noise's relative size grows with d: ``E cos(e~, e) ~ 1/sqrt(1 + d sigma^2)`` (0.41 at
  d = 768, 0.74 at our d = 128 for sigma = 0.08), so a sweep should include larger sigma.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.base import DualTowerModule, MethodConfig
from modules.registry import METHODS
from modules.towers.output import TowerOutput


@dataclass
class CLOSEConfig(MethodConfig):
    name: str = "close"
    noise_std: float = 0.08  # sigma per dimension (paper: 0.08 for visual entailment)
    # label -> number of classes, one head per label; empty: every label the data declares
    # (a default in the field would be merged into, not replaced by, a configured mapping)
    classes: dict[str, int] = field(default_factory=dict)
    hidden: int | None = 256  # hidden width of each head's MLP; None: a linear head
    loss_weights: dict[str, float] = field(default_factory=lambda: {"ce": 1.0})

    def __post_init__(self) -> None:
        if self.noise_std < 0:
            raise ValueError(f"noise_std: must be >= 0, got {self.noise_std}")
        if self.classes and min(self.classes.values()) < 2:
            raise ValueError(f"classes: need labels with >= 2 classes each, got {self.classes}")


class GaussianNoise(nn.Module):
    """``normalize(x + N(0, std^2 I))`` in training mode; the identity in eval mode."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        return F.normalize(x + torch.randn_like(x) * self.std, dim=-1)


def classifier(dim: int, classes: int, hidden: int | None) -> nn.Module:
    """A linear head, or ``Linear -> GELU -> Linear`` with ``hidden`` units."""
    if hidden is None:
        return nn.Linear(dim, classes)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, classes))


@METHODS.register("close", CLOSEConfig)
class CLOSE(DualTowerModule):
    """Heads trained on noisy caption-side embeddings, evaluated on item-side embeddings."""

    loss_terms = ("ce",)
    #: the training noise is a random draw
    deterministic_overrides = {"noise_std": 0.0}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg: CLOSEConfig = self.method_cfg
        dim = self.hparams["model"]["embed_dim"]
        self.item_side, self.caption_side = self.pair
        classes = dict(cfg.classes or self.labels)
        if not classes:
            raise ValueError("method.classes: the data declares no labels; name them here")
        wrong = {
            label: (n, self.labels[label])
            for label, n in classes.items()
            if label in self.labels and self.labels[label] != n
        }
        if wrong:
            raise ValueError(f"method.classes: (configured, data) class counts differ: {wrong}")
        self.noise = GaussianNoise(cfg.noise_std)
        self.heads = nn.ModuleDict(
            {label: classifier(dim, n, cfg.hidden) for label, n in classes.items()}
        )

    def encode(self, batch: dict[str, Any]) -> dict[str, TowerOutput]:
        """Training encodes only the caption side: CLOSE never sees an image while training."""
        if self.training:
            return {self.caption_side: self.towers[self.caption_side](batch)}
        return super().encode(batch)

    def logits(self, embedding: Tensor) -> dict[str, Tensor]:
        """Each head's logits for L2-normalised embeddings [B, D]."""
        return {label: head(embedding) for label, head in self.heads.items()}

    def losses(self, batch: dict[str, Any], outputs: dict[str, TowerOutput]) -> dict[str, Tensor]:
        """Mean over labels of the heads' cross-entropy on ``normalize(e + eps)`` (train) or on
        the clean caption embedding ``e`` (validation/test loss)."""
        text = self.normalized(self.caption_side, outputs[self.caption_side])
        logits = self.logits(self.noise(text))
        missing = [label for label in logits if f"label/{label}" not in batch]
        if missing:
            raise KeyError(f"CLOSE needs the batch labels {[f'label/{m}' for m in missing]}")
        ce = [
            F.cross_entropy(value, batch[f"label/{label}"], ignore_index=-1)  # -1: no label
            for label, value in logits.items()
        ]
        return {"ce": torch.stack(ce).mean()}

    def evaluators(self) -> dict[str, dict[str, Any]]:
        """The heads' accuracy (``classifier`` evaluator)."""
        return {"classifier": {}}

    def eval_outputs(
        self, batch: dict[str, Any], outputs: dict[str, TowerOutput]
    ) -> dict[str, Tensor]:
        """The heads' logits on image embeddings (the transfer) and on text embeddings:
        ``logits/<side>/<label>``."""
        return {
            f"logits/{side}/{label}": value
            for side in self.pair
            for label, value in self.logits(self.normalized(side, outputs[side])).items()
        }
