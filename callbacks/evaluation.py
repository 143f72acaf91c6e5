"""Validation/test metrics callback: retrieval, alignment/uniformity, modality gap, zero-shot.

It reads what ``validation_step``/``test_step`` return (``image``, ``text``, ``image_id``,
``index``, ``labels``), feeds the torchmetrics metrics of callbacks/metrics.py, and logs their
synced values once per epoch. Every rank updates and computes (the metrics gather across ranks
inside ``compute()``), so no rank waits on rank-0-only work.
"""

from __future__ import annotations

import modules.env  # noqa: F401

from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor
from torchmetrics import Metric

from callbacks.metrics import AlignmentUniformity, ModalityGap, RetrievalMetrics, ZeroShotAccuracy


class EmbeddingMetrics(pl.Callback):
    """Logs ``{stage}/retrieval/...``, ``{stage}/alignment``, ``{stage}/uniformity/{image,text}``,
    ``{stage}/modality_gap`` and ``{stage}/zero_shot/<task>/accuracy`` for stage val and test.

    ``{stage}/retrieval/mean_R1`` (mean of both directions' R@1) is the value to monitor for
    checkpoints. MLflow forbids "@" in metric names, so R@K is written ``RK``. Zero-shot tasks
    come from ``trainer.datamodule.zero_shot_tasks`` (task -> one prompt per class, in label
    order); their class embeddings are encoded once per epoch with ``pl_module.encode_texts``.
    """

    def __init__(self, retrieval_block_size: int = 1024, uniformity_max_items: int = 4096) -> None:
        self.retrieval_block_size = retrieval_block_size
        self.uniformity_max_items = uniformity_max_items
        self._paired: dict[str, Metric] = {}
        self._zero_shot: dict[str, ZeroShotAccuracy] = {}
        self._class_embeddings: dict[str, Tensor] = {}

    # -- hooks ---------------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._update(outputs)

    def on_test_batch_end(
        self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._update(outputs)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(pl_module, "test")

    # -- work ----------------------------------------------------------------------------------
    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Fresh metrics on the module's device (the reset) and this epoch's class embeddings."""
        device = pl_module.device
        self._paired = {
            "retrieval": RetrievalMetrics(block_size=self.retrieval_block_size).to(device),
            "alignment": AlignmentUniformity(max_items=self.uniformity_max_items).to(device),
            "gap": ModalityGap().to(device),
            "gap_raw": ModalityGap(normalize=False).to(device),
        }
        tasks = getattr(trainer.datamodule, "zero_shot_tasks", None) or {}
        with torch.no_grad():
            self._class_embeddings = {
                task: pl_module.encode_texts(list(prompts)).detach().float().to(device)
                for task, prompts in tasks.items()
            }
        self._zero_shot = {
            task: ZeroShotAccuracy(num_classes=len(emb)).to(device)
            for task, emb in self._class_embeddings.items()
        }

    def _update(self, outputs: Any) -> None:
        if not outputs:
            return
        image, text = outputs["image"], outputs["text"]
        image_id, index = outputs["image_id"], outputs["index"]
        raw = outputs.get("raw")
        for name, metric in self._paired.items():
            if name != "gap_raw":
                metric.update(image, text, image_id, index)
            elif raw is not None:
                metric.update(raw["image"], raw["text"], image_id, index)
        labels = outputs.get("labels") or {}
        for task, metric in self._zero_shot.items():
            if task in labels:
                logits = image.float() @ self._class_embeddings[task].T
                metric.update(logits, labels[task], index)

    def _log(self, pl_module: pl.LightningModule, stage: str) -> None:
        """Compute on every rank (torchmetrics syncs inside) and log the already-synced values."""
        if not self._paired or self._paired["retrieval"].update_count == 0:
            return
        values: dict[str, Tensor] = {}
        for key, value in self._paired["retrieval"].compute().items():
            values[f"{stage}/retrieval/{key}"] = value
        r1 = (
            values[f"{stage}/retrieval/image_to_text/R1"],
            values[f"{stage}/retrieval/text_to_image/R1"],
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
        pl_module.log_dict(values, sync_dist=False)
