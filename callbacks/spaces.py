"""Linear probes of every representation space a method exposes, not only its embedding: for
methods that split one encoder's output into several spaces (SepCLR's common and salient
spaces) and claim what each space holds and what it does not.

A method exposes a space as an evaluation output ``outputs["space/<name>"]`` [B, D] (its
``eval_outputs``); the evaluator fits one linear probe per (space, label task) on the training
items' spaces (un-augmented, in order, from the same hook) and scores the evaluation items:
``space_probe/<name>/<task>/accuracy``. Features are used as given (the probe standardises each
dimension; an unnormalised space keeps its norms, as the official SepCLR evaluation fits its
logistic regressions on the raw codes). Items whose label is -1 are left out of both sides (a
label that only means something on part of the data, e.g. the salient pattern on the target
set). Options: ``tasks`` (default: every label of the data) and the probe's own
(:class:`~callbacks.probes.LinearProbeAccuracy`: ``steps``, ``lr``, ``weight_decay``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from callbacks.evaluators import Evaluator, register
from callbacks.probes import LinearProbeAccuracy

PREFIX = "space/"


def spaces_of(outputs: dict[str, Tensor]) -> dict[str, Tensor]:
    """The spaces among a method's evaluation outputs, by name (``space/<name>``)."""
    return {k.removeprefix(PREFIX): v for k, v in outputs.items() if k.startswith(PREFIX)}


@torch.no_grad()
def training_spaces(module: Any, datamodule: Any, tasks: Iterable[str]) -> dict[str, Any]:
    """Every space of the training items (un-augmented, in order) and their labels."""
    was_training = module.training
    module.eval()
    spaces: dict[str, list[Tensor]] = {}
    labels: dict[str, list[Tensor]] = {task: [] for task in tasks}
    for batch in datamodule.probe_loader("train"):
        batch = {k: v.to(module.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        found = spaces_of(module.eval_outputs(batch, module.encode(batch)))
        for name, value in found.items():
            spaces.setdefault(name, []).append(value.float())
        for task in labels:
            labels[task].append(batch[f"label/{task}"])
    module.train(was_training)
    return {
        "spaces": {name: torch.cat(values) for name, values in spaces.items()},
        "labels": {task: torch.cat(values) for task, values in labels.items()},
    }


@register
class SpaceProbe(Evaluator):
    """Linear-probe accuracy of each label task from each ``space/<name>`` output."""

    name = "space_probe"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        labels = dict(getattr(datamodule, "labels", None) or {})
        tasks = options.get("tasks") or list(labels)
        bank = training_spaces(module, datamodule, tasks)
        if not bank["spaces"]:
            raise ValueError(
                f"space_probe: method {module.method_cfg.name} exposes no space/<name> output"
            )
        extra = {k: v for k, v in options.items() if k != "tasks"}
        self.metrics: dict[tuple[str, str], LinearProbeAccuracy] = {}
        for space, features in bank["spaces"].items():
            for task in tasks:
                metric = LinearProbeAccuracy(num_classes=labels[task], **extra).to(self.device)
                metric.set_bank(features, bank["labels"][task])
                self.metrics[space, task] = metric

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        spaces = spaces_of(out["outputs"])
        for (space, task), metric in self.metrics.items():
            if task in out["labels"]:
                metric.update(spaces[space].float(), out["labels"][task], out["index"])

    def compute(self) -> dict[str, Tensor]:
        return {
            f"space_probe/{space}/{task}/accuracy": metric.compute()
            for (space, task), metric in self.metrics.items()
            if metric.update_count
        }
