"""Temporal grounding and grounded QA metrics, fed by a method's ``eval_outputs``.

``grounding``: the predicted moment of each query (``outputs["grounding/start"]``,
``outputs["grounding/end"]``, fractions of the clip) against ``target/start``,
``target/end``; queries whose true moment is unknown (NaN) are left out. Logs, in percent:

- ``grounding/R1_IoU<t>`` for t in ``ious`` (0.3, 0.5, 0.7): the share of queries whose top
  moment overlaps the truth with IoU >= t (R@1 of Charades-STA / ActivityNet Captions);
- ``grounding/mIoU``: mean IoU; ``grounding/mIoP``, ``grounding/IoP<t>``: intersection over
  the *predicted* length (NExT-GQA's IoP: is the predicted segment inside the evidence?).

With ``outputs["qa/logits"]`` [B, K] (scores of the K answer candidates) and ``label/answer``
also ``qa/accuracy`` and ``qa/acc_gqa``: answered correctly *and* grounded with IoP >= 0.5
(NExT-GQA's Acc@GQA), both in percent over all questions (Acc@GQA over those with a moment).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from callbacks.evaluators import Evaluator, register
from callbacks.metrics import first_occurrence
from modules.losses.grounding import temporal_iou

STATES = ("pred_start", "pred_end", "start", "end", "correct", "index")


def intersection_over_prediction(
    pred_start: Tensor, pred_end: Tensor, start: Tensor, end: Tensor
) -> Tensor:
    """|pred ∩ truth| / |pred| (0 for an empty prediction)."""
    inter = (torch.minimum(pred_end, end) - torch.maximum(pred_start, start)).clamp_min(0)
    length = pred_end - pred_start
    return torch.where(length > 0, inter / length.clamp_min(1e-12), torch.zeros_like(inter))


class GroundingMetrics(Metric):
    """R@1 at IoU thresholds, mIoU, mIoP, IoP thresholds and (with answers) QA accuracy and
    Acc@GQA, over the whole split (rows synced under DDP, one per ``index``)."""

    full_state_update = False

    def __init__(
        self, ious: tuple[float, ...] = (0.3, 0.5, 0.7), gqa_iop: float = 0.5, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.ious, self.gqa_iop = tuple(ious), gqa_iop
        for name in STATES:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        pred_start: Tensor,
        pred_end: Tensor,
        start: Tensor,
        end: Tensor,
        index: Tensor,
        correct: Tensor | None = None,
    ) -> None:
        """Predicted and true moments [B] (true NaN: unknown), ``index`` [B], and whether each
        answer was right ([B] bool; None without questions)."""
        if not pred_start.shape == pred_end.shape == start.shape == end.shape == index.shape:
            raise ValueError("predicted and true moments and index must all be [B]")
        values = (pred_start, pred_end, start, end)
        for name, value in zip(STATES[:4], values, strict=True):
            getattr(self, name).append(value.detach().double())
        flags = torch.full_like(index, -1) if correct is None else correct.long()
        self.correct.append(flags.detach())
        self.index.append(index.detach().long())

    def compute(self) -> dict[str, Tensor]:
        rows = first_occurrence(dim_zero_cat(self.index))
        p0, p1, t0, t1 = (dim_zero_cat(getattr(self, n))[rows] for n in STATES[:4])
        correct = dim_zero_cat(self.correct)[rows]
        known = t0.isfinite() & t1.isfinite()
        iou = temporal_iou(p0, p1, t0, t1)[known]
        iop = intersection_over_prediction(p0, p1, t0, t1)[known]
        out: dict[str, Tensor] = {}
        if known.any():
            for t in self.ious:
                out[f"R1_IoU{t:g}"] = 100 * (iou >= t).double().mean()
                out[f"IoP{t:g}"] = 100 * (iop >= t).double().mean()
            out["mIoU"], out["mIoP"] = 100 * iou.mean(), 100 * iop.mean()
        if (correct >= 0).any():
            out["qa/accuracy"] = 100 * (correct == 1).double().mean()
            if known.any():
                grounded = (correct[known] == 1) & (iop >= self.gqa_iop)
                out["qa/acc_gqa"] = 100 * grounded.double().mean()
        return out


@register
class Grounding(Evaluator):
    """Grounding (and grounded QA) metrics of :class:`GroundingMetrics`. Options: ``ious``
    (R@1 / IoP thresholds), ``gqa_iop`` (Acc@GQA's IoP threshold). Only methods that predict
    moments ask for it (``evaluators()``)."""

    name = "grounding"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        extra = {k: v for k, v in options.items() if k in ("ious", "gqa_iop")}
        if "ious" in extra:
            extra["ious"] = tuple(extra["ious"])
        self.metric = GroundingMetrics(**extra).to(self.device)

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        outputs, targets = out["outputs"], out["targets"]
        if "grounding/start" not in outputs:
            raise KeyError("grounding: the method gives no grounding/start, grounding/end outputs")
        correct = None
        if "qa/logits" in outputs:
            correct = outputs["qa/logits"].argmax(dim=1) == out["labels"]["answer"]
        self.metric.update(
            outputs["grounding/start"],
            outputs["grounding/end"],
            targets["start"],
            targets["end"],
            out["index"],
            correct,
        )

    def compute(self) -> dict[str, Tensor]:
        if not self.metric.update_count:
            return {}
        values = self.metric.compute()
        return {k if k.startswith("qa/") else f"grounding/{k}": v for k, v in values.items()}
