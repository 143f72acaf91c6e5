"""Validation/test evaluation callback: runs the run's evaluators (callbacks/evaluators.py).

It reads what ``validation_step``/``test_step`` return (see
``modules.base.AlignmentModule._eval_step``), hands each batch to every evaluator chosen for the
run (the data's defaults, the method's own, the YAML's ``evaluation`` block) and logs their
synced values once per epoch. Every rank updates and computes (the metrics gather across ranks
inside ``compute()``), so no rank waits on rank-0-only work.
"""

from __future__ import annotations

import modules.env  # noqa: F401

from typing import Any

import lightning.pytorch as pl

import callbacks.continual  # noqa: F401  (registers continual)
import callbacks.domain_retrieval  # noqa: F401  (registers domain_retrieval)
import callbacks.effective_rank  # noqa: F401  (registers effective_rank)
import callbacks.generation  # noqa: F401  (registers generation)
import callbacks.grounding  # noqa: F401  (registers grounding)
import callbacks.mask_grounding  # noqa: F401  (registers mask_grounding)
import callbacks.modality_zero_shot  # noqa: F401  (registers modality_zero_shot)
import callbacks.open_world  # noqa: F401  (registers open_world)
import callbacks.segmentation  # noqa: F401  (registers segmentation)
import callbacks.semantic_shift  # noqa: F401  (registers semantic_shift)
import callbacks.spaces  # noqa: F401  (registers space_probe)
import callbacks.token_f1  # noqa: F401  (registers token_f1)
import callbacks.transcript  # noqa: F401  (registers wer)
import callbacks.uniformity_tolerance  # noqa: F401  (registers uniformity_tolerance)
import callbacks.volume_retrieval  # noqa: F401  (registers volume_retrieval)
import callbacks.word_translation  # noqa: F401  (registers word_translation)
from callbacks.evaluators import EVALUATORS, Evaluator, chosen_evaluators


class EmbeddingMetrics(pl.Callback):
    """Logs ``{stage}/<metric>`` for stage val and test from every chosen evaluator.

    ``config``: the ``evaluation`` block (``evaluators``: a list replacing the data's defaults,
    ``exclude``, ``options.<name>``). MLflow forbids "@" in metric names, so R@K is ``RK``.
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config = dict(config or {})
        self._evaluators: list[Evaluator] = []

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._update(outputs, batch)

    def on_test_batch_end(
        self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._update(outputs, batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(pl_module, "test")

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Fresh evaluators (and their metrics on the module's device) for this epoch."""
        datamodule = trainer.datamodule
        chosen = chosen_evaluators(pl_module, datamodule, self.config)
        shared: dict = {}
        self._evaluators = [
            EVALUATORS[name](pl_module, datamodule, options, shared)
            for name, options in chosen.items()
        ]

    def _update(self, outputs: Any, batch: Any) -> None:
        if not outputs:
            return
        for evaluator in self._evaluators:
            evaluator.update(outputs, batch)

    def _log(self, pl_module: pl.LightningModule, stage: str) -> None:
        """Compute on every rank (torchmetrics syncs inside) and log the already-synced values."""
        values = {}
        for evaluator in self._evaluators:
            values |= {f"{stage}/{key}": value for key, value in evaluator.compute().items()}
        if values:
            pl_module.log_dict(values, sync_dist=False)
        self._evaluators = []
