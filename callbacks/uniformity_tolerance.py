"""Uniformity and tolerance of one encoder's embeddings (Wang & Liu, "Understanding the Behaviour
of Contrastive Loss", CVPR 2021): the two sides of their uniformity-tolerance dilemma.

- ``uniformity_tolerance/uniformity`` = ``L_u = log E_{x != y} exp(-2 |z_x - z_y|^2)`` over pairs
  of distinct items (Wang & Isola 2020, t = 2; :func:`~modules.losses.contrastive_gap.uniformity`):
  lower is more uniform; about ``-4`` is its floor (Jensen: the mean squared distance of many
  unit vectors is at most about 2), ``0`` a collapse.
- ``uniformity_tolerance/tolerance/<task>`` = ``T = E_{x != y, l(x) = l(y)} <z_x, z_y>``, the mean
  cosine of two distinct items of one class of label task ``<task>`` (rows labelled -1 left
  out): how close the embedding keeps semantically similar samples (higher: more tolerant).
  The paper's ``T`` averages over same-class pairs; the pairs of an item with itself (always 1)
  are left out here, so a collapse-free embedding with no class structure scores near 0.

The embeddings are the ones every evaluator reads (``embeddings``, L2-normalised: the encoder's
representation; for SimCLR-like methods ``h`` before the projection head). The paper measures
the feature its loss compares; a method whose loss compares a projection of the embedding may
expose it as the evaluation output ``projection/<modality>`` (L2-normalised), and the same two
quantities of it are then reported under ``uniformity_tolerance/projection/...``. Items are
distinct by ``item_id`` (the rows a ``DistributedSampler`` pads in are dropped) and, beyond
``max_items``, ``max_items`` of them evenly spaced over the id-sorted set (as
:class:`~callbacks.metrics.AlignmentUniformity`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from callbacks.evaluators import Evaluator, option_modality, register
from callbacks.metrics import first_occurrence
from modules.losses.contrastive_gap import uniformity


class UniformityTolerance(Metric):
    """``uniformity`` and ``tolerance/<task>`` of the embeddings seen, over distinct items
    (states gathered across DDP ranks in ``compute``, de-duplicated by ``item_id``)."""

    full_state_update = False

    def __init__(self, tasks: tuple[str, ...], max_items: int = 4096, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if max_items < 2:
            raise ValueError(f"uniformity_tolerance: max_items must be at least 2, got {max_items}")
        self.tasks, self.max_items = tuple(tasks), max_items
        self.add_state("embedding", default=[], dist_reduce_fx="cat")
        self.add_state("item_id", default=[], dist_reduce_fx="cat")
        for position in range(len(self.tasks)):
            self.add_state(f"label_{position}", default=[], dist_reduce_fx="cat")

    def update(self, embedding: Tensor, labels: dict[str, Tensor], item_id: Tensor) -> None:
        """L2-normalised embeddings [B, D], each task's labels [B] and ``item_id`` [B]."""
        self.embedding.append(embedding.detach().float())
        self.item_id.append(item_id.detach().long())
        for position, task in enumerate(self.tasks):
            getattr(self, f"label_{position}").append(labels[task].detach().long())

    def compute(self) -> dict[str, Tensor]:
        rows = first_occurrence(dim_zero_cat(self.item_id))
        if len(rows) > self.max_items:
            pick = torch.linspace(0, len(rows) - 1, self.max_items, device=rows.device)
            rows = rows[pick.round().long()]
        z = dim_zero_cat(self.embedding)[rows]
        values = {"uniformity": uniformity(z, t=2.0)}
        similarity = z @ z.T
        other = ~torch.eye(len(z), dtype=torch.bool, device=z.device)
        for position, task in enumerate(self.tasks):
            label = dim_zero_cat(getattr(self, f"label_{position}"))[rows]
            same = (label[:, None] == label[None, :]) & (label[:, None] >= 0) & other
            if same.any():
                values[f"tolerance/{task}"] = similarity[same].mean()
        return values


@register
class UniformityToleranceEvaluator(Evaluator):
    """Wang & Liu's uniformity and per-task tolerance (:class:`UniformityTolerance`) of one
    encoder's embeddings. Default for one-encoder methods on labelled data. Options:
    ``modality`` (default: the first encoder), ``tasks`` (default: every label task of the
    data), ``max_items`` (default 4 096: at most 4 096 x 4 096 similarities). Also of the
    method's ``projection/<modality>`` output, when it has one."""

    name = "uniformity_tolerance"

    def __init__(
        self, module: Any, datamodule: Any, options: dict[str, Any], shared: dict | None = None
    ) -> None:
        super().__init__(module, datamodule, options, shared)
        self.side = option_modality(self.name, module, options)
        tasks = tuple(options.get("tasks") or getattr(datamodule, "labels", None) or ())
        most = options.get("max_items", 4096)
        self.metric = UniformityTolerance(tasks, most).to(self.device)
        self.projection = UniformityTolerance(tasks, most).to(self.device)

    @classmethod
    def applies(cls, module: Any, datamodule: Any) -> bool:
        return len(module.modalities) == 1 and bool(getattr(datamodule, "labels", None))

    def update(self, out: dict[str, Any], batch: dict[str, Any]) -> None:
        if not all(task in out["labels"] for task in self.metric.tasks):
            return
        self.metric.update(out["embeddings"][self.side], out["labels"], out["item_id"])
        projected = out.get("outputs", {}).get(f"projection/{self.side}")
        if projected is not None:
            self.projection.update(projected, out["labels"], out["item_id"])

    def compute(self) -> dict[str, Tensor]:
        values: dict[str, Tensor] = {}
        for prefix, metric in (("", self.metric), ("projection/", self.projection)):
            if metric.update_count:
                values |= {
                    f"uniformity_tolerance/{prefix}{k}": v for k, v in metric.compute().items()
                }
        return values
