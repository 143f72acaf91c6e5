"""Open-world classification metrics (the OW-DFA / ORCA protocol; official
``owdfa/utils/eval.py`` ``val_stat``): a classifier over known + novel classes, scored

- ``known/accuracy``: plain accuracy on the items of known classes (label id < ``num_known``);
- ``novel/accuracy``: clustering accuracy on the items of novel classes: the predicted ids
  matched one-to-one to the true ids by the Hungarian algorithm on their co-occurrence counts
  (``scipy.optimize.linear_sum_assignment``), then accuracy;
- ``all/accuracy``: the same clustering accuracy over every item (one matching for all);
- ``novel/nmi``, ``all/nmi``: normalised mutual information of predicted and true ids
  (arithmetic-mean normalisation, scikit-learn's default and the code's
  ``normalized_mutual_info_score``).

All in percent. Keys: ``open_world/<task>/known/accuracy``, ... The evaluator reads the method's
``logits/<name>/<task>`` outputs (arg-maxed) and the data's ``known_classes[task]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from callbacks.evaluators import Evaluator, register
from callbacks.metrics import first_occurrence


def cluster_accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy after the best one-to-one map of predicted ids to true ids (Hungarian)."""
    size = int(max(preds.max(), labels.max())) + 1
    counts = np.zeros((size, size), dtype=np.int64)
    np.add.at(counts, (preds, labels), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum()) / len(preds)


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def nmi(preds: np.ndarray, labels: np.ndarray) -> float:
    """Normalised mutual information, ``MI / mean(H(preds), H(labels))``; 1 when both are one
    cluster (scikit-learn's convention)."""
    _, p = np.unique(preds, return_inverse=True)
    _, y = np.unique(labels, return_inverse=True)
    joint = np.zeros((p.max() + 1, y.max() + 1))
    np.add.at(joint, (p, y), 1)
    h_p, h_y = _entropy(joint.sum(1)), _entropy(joint.sum(0))
    if h_p == 0 and h_y == 0:
        return 1.0
    pxy = joint / joint.sum()
    outer = pxy.sum(1, keepdims=True) * pxy.sum(0, keepdims=True)
    inside = pxy > 0
    mi = float((pxy[inside] * np.log(pxy[inside] / outer[inside])).sum())
    return mi / ((h_p + h_y) / 2)


class OpenWorldMetrics(Metric):
    """Known accuracy, novel / all clustering accuracy and NMI (percent) of predicted class ids;
    one row per ``index`` (DDP padding dropped); rows with label -1 ignored."""

    full_state_update = False

    def __init__(self, num_known: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_known = num_known
        for name in ("preds", "labels", "index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, labels: Tensor, index: Tensor) -> None:
        """``preds``: logits [B, K] (arg-maxed) or class ids [B]."""
        if preds.ndim == 2:
            preds = preds.argmax(dim=1)
        valid = labels >= 0
        self.preds.append(preds[valid].detach().long())
        self.labels.append(labels[valid].detach().long())
        self.index.append(index[valid].detach().long())

    def compute(self) -> dict[str, Tensor]:
        rows = first_occurrence(dim_zero_cat(self.index))
        preds = dim_zero_cat(self.preds)[rows].cpu().numpy()
        labels = dim_zero_cat(self.labels)[rows].cpu().numpy()
        known = labels < self.num_known
        values: dict[str, float] = {}
        if known.any():
            values["known/accuracy"] = float((preds[known] == labels[known]).mean())
        if (~known).any():
            values["novel/accuracy"] = cluster_accuracy(preds[~known], labels[~known])
            values["novel/nmi"] = nmi(preds[~known], labels[~known])
        if len(labels):
            values["all/accuracy"] = cluster_accuracy(preds, labels)
            values["all/nmi"] = nmi(preds, labels)
        device = self.device
        return {k: torch.tensor(100.0 * v, device=device) for k, v in values.items()}


@register
class OpenWorld(Evaluator):
    """:class:`OpenWorldMetrics` of the method's ``logits/<name>/<task>`` outputs. Options:
    ``task`` (default: the first of the data's ``known_classes``), ``num_known`` (default:
    ``known_classes[task]``). Only methods that ask for it (``evaluators()``) or a YAML turn it
    on."""

    name = "open_world"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        known = dict(getattr(datamodule, "known_classes", None) or {})
        self.task = options.get("task") or next(iter(known), None)
        num_known = options.get("num_known", known.get(self.task))
        if self.task is None or num_known is None:
            raise ValueError(
                "open_world: needs options.task and options.num_known, or data that declares "
                "known_classes"
            )
        self.metric = OpenWorldMetrics(int(num_known)).to(self.device)
        self.prefix = f"open_world/{self.task}"

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        for key, logits in out["outputs"].items():
            if key.startswith("logits/") and key.rsplit("/", 1)[-1] == self.task:
                self.metric.update(logits, out["labels"][self.task], out["index"])
                return

    def compute(self) -> dict[str, Tensor]:
        if not self.metric.update_count:
            return {}
        return {f"{self.prefix}/{k}": v for k, v in self.metric.compute().items()}
