"""Validation/test metrics callback: retrieval, alignment/uniformity, modality gap, zero-shot
classification (accuracy, and AUROC for yes/no findings) and two-alternative choice tasks.

It reads what ``validation_step``/``test_step`` return (``item``, ``caption``, ``item_id``,
``index``, ``labels``; see ``DualTowerModule._eval_step``), feeds the torchmetrics metrics of
callbacks/metrics.py, and logs their synced values once per epoch. Every rank updates and
computes (the metrics gather across ranks inside ``compute()``), so no rank waits on
rank-0-only work.
"""

from __future__ import annotations

import modules.env  # noqa: F401

from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor
from torchmetrics import Metric

from callbacks.metrics import (
    AlignmentUniformity,
    ChoiceAccuracy,
    ClassRetrieval,
    ModalityGap,
    RetrievalMetrics,
    ZeroShotAccuracy,
    ZeroShotAUROC,
    combined_class,
)


class EmbeddingMetrics(pl.Callback):
    """Logs, for stage val and test, with ``<a>``/``<b>`` the data's two modalities:

    - ``{stage}/retrieval/<a>_to_<b>/R1`` (R5, R10, median_rank, mean_rank), the reverse
      direction, and ``{stage}/retrieval/mean_R1`` (mean of both R@1: the value to monitor);
    - ``{stage}/alignment``, ``{stage}/uniformity/<a>``, ``{stage}/uniformity/<b>``,
      ``{stage}/modality_gap`` and ``{stage}/modality_gap_raw``;
    - ``{stage}/zero_shot/<task>/accuracy`` for ``datamodule.zero_shot_tasks`` (one prompt per
      class), ``{stage}/zero_shot/<task>/auroc`` and ``{stage}/zero_shot/mean_auroc`` for
      ``datamodule.zero_shot_binary_tasks`` (score: similarity to the positive prompt minus
      similarity to the negative one); both need a text tower and score the item side;
    - ``{stage}/<task>/accuracy`` and ``{stage}/<task>/auroc`` for ``datamodule.choice_tasks``
      (e.g. ``sync``: the in-sync clip against a time-shifted one).

    MLflow forbids "@" in metric names, so R@K is written ``RK``. Prompt embeddings are encoded
    once per epoch with ``pl_module.encode_texts``.
    """

    def __init__(self, retrieval_block_size: int = 1024, uniformity_max_items: int = 4096) -> None:
        self.retrieval_block_size = retrieval_block_size
        self.uniformity_max_items = uniformity_max_items
        self._paired: dict[str, Metric] = {}
        self._zero_shot: dict[str, ZeroShotAccuracy] = {}
        self._binary: dict[str, ZeroShotAUROC] = {}
        self._choice: dict[str, ChoiceAccuracy] = {}
        self._choice_inputs: dict[str, tuple[str, str]] = {}
        self._class_labels: tuple[str, ...] = ()
        self._class_retrieval: ClassRetrieval | None = None
        self._prompts: dict[str, Tensor] = {}
        self._modalities: tuple[str, str] = ("image", "text")

    # -- hooks ---------------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._update(pl_module, outputs, batch)

    def on_test_batch_end(
        self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._update(pl_module, outputs, batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(pl_module, "test")

    # -- work ----------------------------------------------------------------------------------
    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Fresh metrics on the module's device (the reset) and this epoch's prompt embeddings."""
        device = pl_module.device
        self._modalities = tuple(pl_module.modalities[:2])
        pair = {"modalities": self._modalities}
        self._paired = {
            "retrieval": RetrievalMetrics(block_size=self.retrieval_block_size, **pair),
            "alignment": AlignmentUniformity(max_items=self.uniformity_max_items, **pair),
            "gap": ModalityGap(**pair),
            "gap_raw": ModalityGap(normalize=False, **pair),
        }
        self._paired = {name: metric.to(device) for name, metric in self._paired.items()}
        datamodule = trainer.datamodule
        texts = "text" in pl_module.towers and self._modalities[0] != "text"
        classes = (getattr(datamodule, "zero_shot_tasks", None) or {}) if texts else {}
        binary = (getattr(datamodule, "zero_shot_binary_tasks", None) or {}) if texts else {}
        with torch.no_grad():
            self._prompts = {
                task: pl_module.encode_texts(list(prompts)).detach().float().to(device)
                for task, prompts in {**classes, **binary}.items()
            }
        self._zero_shot = {
            task: ZeroShotAccuracy(num_classes=len(prompts)).to(device)
            for task, prompts in classes.items()
        }
        self._binary = {task: ZeroShotAUROC().to(device) for task in binary}
        self._choice_inputs = dict(getattr(datamodule, "choice_tasks", None) or {})
        self._choice = {task: ChoiceAccuracy().to(device) for task in self._choice_inputs}
        self._class_labels = tuple(getattr(datamodule, "class_retrieval_labels", None) or ())
        self._class_retrieval = ClassRetrieval().to(device) if self._class_labels else None

    def _update(self, pl_module: pl.LightningModule, outputs: Any, batch: Any) -> None:
        if not outputs:
            return
        item, caption = outputs["item"], outputs["caption"]
        item_id, index = outputs["item_id"], outputs["index"]
        raw = outputs.get("raw")
        for name, metric in self._paired.items():
            if name != "gap_raw":
                metric.update(item, caption, item_id, index)
            elif raw is not None:
                metric.update(raw["item"], raw["caption"], item_id, index)
        labels = outputs.get("labels") or {}
        for task, metric in self._zero_shot.items():
            if task in labels:
                metric.update(item.float() @ self._prompts[task].T, labels[task], index)
        for task, metric in self._binary.items():
            if task in labels:
                negative, positive = (item.float() @ self._prompts[task].T).unbind(dim=1)
                metric.update(positive - negative, labels[task], index)
        if self._class_retrieval is not None:
            classes = combined_class(
                [labels[name] for name in self._class_labels], [1024] * len(self._class_labels)
            )
            self._class_retrieval.update(item, classes, item_id)
        for task, metric in self._choice.items():
            key, modality = self._choice_inputs[task]
            candidate_side = self._modalities.index(modality)
            anchor, own = (caption, item) if candidate_side == 0 else (item, caption)
            wrong = pl_module.encode_input(batch, modality, key)
            metric.update((anchor * own).sum(dim=1), (anchor * wrong).sum(dim=1), index)

    def _log(self, pl_module: pl.LightningModule, stage: str) -> None:
        """Compute on every rank (torchmetrics syncs inside) and log the already-synced values."""
        if not self._paired or self._paired["retrieval"].update_count == 0:
            return
        values: dict[str, Tensor] = {}
        for key, value in self._paired["retrieval"].compute().items():
            values[f"{stage}/retrieval/{key}"] = value
        a, b = self._modalities
        r1 = (
            values[f"{stage}/retrieval/{a}_to_{b}/R1"],
            values[f"{stage}/retrieval/{b}_to_{a}/R1"],
        )
        values[f"{stage}/retrieval/mean_R1"] = (r1[0] + r1[1]) / 2
        for name in ("alignment", "gap", "gap_raw"):
            if not self._paired[name].update_count:
                continue
            for key, value in self._paired[name].compute().items():
                values[f"{stage}/{key}"] = value
        for task, metric in self._zero_shot.items():
            if metric.update_count:
                values[f"{stage}/zero_shot/{task}/accuracy"] = metric.compute()
        aurocs = [
            values.setdefault(f"{stage}/zero_shot/{task}/auroc", metric.compute())
            for task, metric in self._binary.items()
            if metric.update_count
        ]
        defined = [v for v in aurocs if not torch.isnan(v)]
        if defined:
            values[f"{stage}/zero_shot/mean_auroc"] = torch.stack(defined).mean()
        for task, metric in self._choice.items():
            if metric.update_count:
                for key, value in metric.compute().items():
                    values[f"{stage}/{task}/{key}"] = value
        if self._class_retrieval is not None and self._class_retrieval.update_count:
            for key, value in self._class_retrieval.compute().items():
                values[f"{stage}/class_retrieval/{key}"] = value
        pl_module.log_dict(values, sync_dist=False)
