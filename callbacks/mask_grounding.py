"""Mask grounding accuracy: how well a predicted mask covers the referred object, per kind
of expression prompt (EPCFormer's audio and text expressions).

Per item, the IoU between the predicted mask (``mask_logits/<expression>`` > 0: sigmoid above
one half) and the true mask (``batch["mask"]`` > 0.5). Logged as ``mask_grounding/<expression>/``:

- ``accuracy``: percent of items whose IoU is at least ``threshold`` (0.5): the "P@0.5" of
  referring segmentation (and of RefCOCO-style grounding with boxes);
- ``mIoU``: mean per-item IoU, percent (the region similarity J of video object segmentation,
  on one frame);
- ``oIoU``: overall IoU, percent: total intersection over total union across items (the
  referring-segmentation literature's cumulative IoU).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from callbacks.evaluators import Evaluator, register
from callbacks.metrics import first_occurrence


class MaskGroundingIoU(Metric):
    """Per-item intersection and union of predicted and true masks, de-duplicated by ``index``
    across batches and DDP ranks; ``compute`` gives ``accuracy``, ``mIoU`` and ``oIoU`` (all
    percent). An item whose true and predicted masks are both empty has IoU 1."""

    full_state_update = False

    def __init__(self, threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must lie in (0, 1], got {threshold}")
        self.threshold = threshold
        for name in ("intersection", "union", "index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, predicted: Tensor, truth: Tensor, index: Tensor) -> None:
        """Boolean masks [B, H, W] and the items' ``index`` [B]."""
        if predicted.shape != truth.shape or predicted.ndim != 3 or len(index) != len(truth):
            raise ValueError(
                f"need masks [B, H, W] of one shape and index [B]; got {tuple(predicted.shape)}, "
                f"{tuple(truth.shape)}, {tuple(index.shape)}"
            )
        predicted, truth = predicted.bool().flatten(1), truth.bool().flatten(1)
        self.intersection.append((predicted & truth).sum(dim=1).double())
        self.union.append((predicted | truth).sum(dim=1).double())
        self.index.append(index.detach().long())

    def compute(self) -> dict[str, Tensor]:
        rows = first_occurrence(dim_zero_cat(self.index))
        inter, union = dim_zero_cat(self.intersection)[rows], dim_zero_cat(self.union)[rows]
        iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
        return {
            "accuracy": 100 * (iou >= self.threshold).double().mean(),
            "mIoU": 100 * iou.mean(),
            "oIoU": 100 * inter.sum() / union.sum().clamp_min(1),
        }


@register
class MaskGrounding(Evaluator):
    """Mask IoU of the method's ``mask_logits/<expression>`` outputs against ``batch["mask"]``.
    Options: ``expressions`` (default: audio and text), ``threshold`` (0.5). Only methods that
    ask for it (``evaluators()``) or a YAML turn it on."""

    name = "mask_grounding"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        threshold = float(options.get("threshold", 0.5))
        self.metrics = {
            name: MaskGroundingIoU(threshold).to(self.device)
            for name in options.get("expressions") or ("audio", "text")
        }

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        truth = batch["mask"] > 0.5
        for name, metric in self.metrics.items():
            logits = out["outputs"].get(f"mask_logits/{name}")
            if logits is not None:
                metric.update(logits > 0, truth, out["index"])

    def compute(self) -> dict[str, Tensor]:
        values: dict[str, Tensor] = {}
        for name, metric in self.metrics.items():
            if metric.update_count:
                values |= {f"mask_grounding/{name}/{k}": v for k, v in metric.compute().items()}
        return values
