"""Training throughput in samples per second, on the progress bar and in MLflow."""

from __future__ import annotations

import modules.env  # noqa: F401

import time

import lightning.pytorch as pl


class Throughput(pl.Callback):
    """``train/samples_per_s`` (``samples/s`` on the progress bar): samples of this process per
    second of wall time over the last ``window`` steps (data loading, step and logging included)."""

    def __init__(self, window: int = 20) -> None:
        self.window = window
        self._marks: list[tuple[float, int]] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._marks = []  # an epoch boundary (validation) is not training time

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        size = len(batch["index"])
        seen = (self._marks[-1][1] if self._marks else 0) + size
        self._marks = [*self._marks[-self.window :], (time.perf_counter(), seen)]
        if len(self._marks) > 1:
            (t0, n0), (t1, n1) = self._marks[0], self._marks[-1]
            rate = (n1 - n0) / (t1 - t0)
            pl_module.log("train/samples_per_s", rate)
            pl_module.log("samples/s", rate, prog_bar=True, logger=False)
