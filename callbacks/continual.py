"""Class-incremental evaluation: accuracy per task, average accuracy and forgetting.

The data declares its tasks (``datamodule.continual_tasks``: the class ids of each task, in
order) and the stage's task ``k`` (``datamodule.current_task``, 1-based); its evaluation split
holds the items of tasks 1..k. The method's outputs are the logits of this stage's model,
``logits/<current>/<label>``, and, when it was given the earlier tasks' models, the logits of
the model after each earlier task ``l``: ``logits/task<l>/<label>``. With ``a[l, j]`` the
accuracy (percent, argmax over every class) of the model after task ``l`` on the items of task
``j`` (Chaudhry et al. 2018; De Lange et al. 2021):

- ``continual/task<j>/accuracy`` = ``a[k, j]`` for every seen task ``j <= k``;
- ``continual/last_accuracy``: this model's accuracy on all items of tasks 1..k (the paper's
  "last" accuracy after the final task);
- with the earlier models only: ``continual/average_accuracy`` = mean over ``l = 1..k`` of
  the accuracy of the model after task ``l`` on the items of tasks 1..l (the average
  incremental accuracy, the paper's "Avg Acc"), and, for ``k > 1``,
  ``continual/forgetting`` = mean over ``j < k`` of ``max_{l in [j, k-1]} a[l, j] - a[k, j]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from callbacks.evaluators import Evaluator, register
from callbacks.metrics import first_occurrence


class ContinualAccuracy(Metric):
    """The accuracy matrix of :mod:`callbacks.continual` from per-sample predictions of M
    models (the models after tasks 1..M, the last one the stage's own); rows synced across
    ranks and de-duplicated by ``index``."""

    full_state_update = False

    def __init__(self, tasks: list[list[int]], current: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 1 <= current <= len(tasks):
            raise ValueError(f"current task must be in [1, {len(tasks)}], got {current}")
        self.tasks, self.current = [list(t) for t in tasks], current
        for name in ("preds", "labels", "index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, labels: Tensor, index: Tensor) -> None:
        """``preds`` [B, M] predicted class of each model, ``labels`` and ``index`` [B]."""
        self.preds.append(preds.detach().long())
        self.labels.append(labels.detach().long())
        self.index.append(index.detach().long())

    def matrix(self) -> Tensor:
        """``a`` [M, k]: accuracy (percent) of model ``l`` on task ``j`` (NaN: no item)."""
        preds, labels = dim_zero_cat(self.preds), dim_zero_cat(self.labels)
        rows = first_occurrence(dim_zero_cat(self.index))
        preds, labels = preds[rows], labels[rows]
        out = torch.full((preds.shape[1], self.current), float("nan"), device=preds.device)
        for j, classes in enumerate(self.tasks[: self.current]):
            member = torch.isin(labels, torch.tensor(classes, device=labels.device))
            if member.any():
                out[:, j] = 100.0 * (preds[member] == labels[member, None]).float().mean(0)
        return out

    def compute(self) -> dict[str, Tensor]:
        preds, labels = dim_zero_cat(self.preds), dim_zero_cat(self.labels)
        rows = first_occurrence(dim_zero_cat(self.index))
        preds, labels = preds[rows], labels[rows]
        a, k = self.matrix(), self.current
        values = {f"task{j + 1}/accuracy": a[-1, j] for j in range(k)}

        def seen_accuracy(model: int, tasks: int) -> Tensor:
            seen = [c for group in self.tasks[:tasks] for c in group]
            member = torch.isin(labels, torch.tensor(seen, device=labels.device))
            return 100.0 * (preds[member, model] == labels[member]).float().mean()

        values["last_accuracy"] = seen_accuracy(-1, k)
        if preds.shape[1] == k:  # every earlier model is here
            values["average_accuracy"] = torch.stack(
                [seen_accuracy(l, l + 1) for l in range(k)]
            ).mean()
            if k > 1:
                drops = [a[j : k - 1, j].max() - a[k - 1, j] for j in range(k - 1)]
                values["forgetting"] = torch.stack(drops).mean()
        return values


@register
class Continual(Evaluator):
    """Per-task accuracy, average accuracy and forgetting (module docstring). Options:
    ``label`` (the classified label, default ``intent``), ``current`` (the name of this
    model's logits, default ``audio``)."""

    name = "continual"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        if not hasattr(datamodule, "continual_tasks"):
            raise ValueError(f"continual: data {datamodule.name!r} declares no continual tasks")
        self.label = options.get("label", "intent")
        self.current = options.get("current", "audio")
        self.metric = ContinualAccuracy(datamodule.continual_tasks, datamodule.current_task).to(
            self.device
        )

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        outputs = out["outputs"]
        earlier, task = [], 1
        while f"logits/task{task}/{self.label}" in outputs:
            earlier.append(outputs[f"logits/task{task}/{self.label}"])
            task += 1
        logits = [*earlier, outputs[f"logits/{self.current}/{self.label}"]]
        preds = torch.stack([x.argmax(dim=1) for x in logits], dim=1)
        self.metric.update(preds, out["labels"][self.label], out["index"])

    def compute(self) -> dict[str, Tensor]:
        if not self.metric.update_count:
            return {}
        return {f"continual/{k}": v for k, v in self.metric.compute().items()}
