"""Data health: count the samples whose file was bad, log them, stop when there are too many.

``PairDataset`` replaces a sample whose file is missing or corrupt by the next one that loads
and lists the error in the batch (``batch["skipped"]``, one string per failed file naming it),
so a few bad files cost neither the run nor the batch size. This callback makes them visible
(``data/skipped`` in MLflow, from the first skipped file on) and turns silent data rot into an
error once more than ``data.max_skipped_fraction`` of a stage's samples needed a replacement.
"""

from __future__ import annotations

import modules.env  # noqa: F401

import math
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist

#: Used when the datamodule's config has no ``max_skipped_fraction``.
DEFAULT_MAX_SKIPPED_FRACTION = 0.01
#: Failing files named in the error message.
MAX_NAMED = 3
STAGES = ("train", "val", "test")


class DataQualityError(RuntimeError):
    """More samples had a bad file than ``data.max_skipped_fraction`` allows."""


class SkippedSamples(pl.Callback):
    """Counts, per stage (train, val, test), the samples seen and the bad files skipped, summed
    over DDP ranks (one small all-reduce per batch, so every rank holds the same counts and
    all stop together), and logs ``data/skipped``: the files skipped so far in all stages.

    Raises :class:`DataQualityError` when a stage's skipped / seen exceeds the datamodule
    config's ``max_skipped_fraction``: checked after every batch once the stage has seen at
    least ``1 / max_skipped_fraction`` samples (so one bad file in an early batch does not stop
    a run on its own) and at the end of every epoch. Sanity-check batches are not counted.
    The counts are part of a checkpoint, so a resumed run keeps counting from where it was.
    """

    def __init__(self) -> None:
        self.seen = dict.fromkeys(STAGES, 0)
        self.skipped = dict.fromkeys(STAGES, 0)
        self.examples: dict[str, list[str]] = {stage: [] for stage in STAGES}

    # -- hooks ---------------------------------------------------------------------------------
    def on_train_batch_end(
        self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._count(trainer, pl_module, batch, "train")

    def on_validation_batch_end(
        self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._count(trainer, pl_module, batch, "val")

    def on_test_batch_end(
        self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._count(trainer, pl_module, batch, "test")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer, "train", epoch_end=True)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._check(trainer, "val", epoch_end=True)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer, "test", epoch_end=True)

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "skipped": self.skipped, "examples": self.examples}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seen.update(state_dict["seen"])
        self.skipped.update(state_dict["skipped"])
        self.examples.update(state_dict["examples"])

    # -- work ----------------------------------------------------------------------------------
    def _count(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, stage: str
    ) -> None:
        """Add the batch's samples and skipped files, summed over ranks; log; check."""
        if trainer.sanity_checking:
            return
        reasons = batch.get("skipped", [])
        local = torch.tensor([len(batch["index"]), len(reasons)], device=pl_module.device)
        seen, skipped = trainer.strategy.reduce(local, reduce_op="sum").tolist()
        self.seen[stage] += int(seen)
        self.skipped[stage] += int(skipped)
        named = self.examples[stage]
        named += reasons[: MAX_NAMED - len(named)]
        total = float(sum(self.skipped.values()))
        if total > 0:  # from the first skipped file on: no flat zero curve in the UI
            if stage == "train":
                pl_module.log("data/skipped", total, on_step=True, on_epoch=False)
            else:  # the running count is logged once per epoch: its last (largest) value
                pl_module.log("data/skipped", total, on_step=False, on_epoch=True, reduce_fx="max")
        self._check(trainer, stage, epoch_end=False)

    def _check(self, trainer: pl.Trainer, stage: str, epoch_end: bool) -> None:
        """Raise :class:`DataQualityError` if ``stage`` skipped more than the threshold allows.
        Every rank holds the same counts, so every rank decides alike."""
        seen, skipped = self.seen[stage], self.skipped[stage]
        limit = self._limit(trainer)
        if seen == 0 or skipped <= limit * seen:
            return
        if not epoch_end and limit > 0 and seen < math.ceil(1 / limit):
            return
        named = "; ".join(self._named(trainer, stage)) or "(none recorded on this rank)"
        raise DataQualityError(
            f"{skipped} of {seen} {stage} samples failed to load ({skipped / seen:.2%}), more "
            f"than data.max_skipped_fraction = {limit:g} allows; failing files: {named}"
        )

    @staticmethod
    def _limit(trainer: pl.Trainer) -> float:
        """``max_skipped_fraction`` of the datamodule's config, else the default."""
        cfg = getattr(trainer.datamodule, "cfg", None)
        return float(getattr(cfg, "max_skipped_fraction", DEFAULT_MAX_SKIPPED_FRACTION))

    def _named(self, trainer: pl.Trainer, stage: str) -> list[str]:
        """Up to :data:`MAX_NAMED` failing files with their errors, from every rank (all ranks
        raise together, so this collective is reached by all)."""
        named = self.examples[stage]
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            parts: list[list[str] | None] = [None] * trainer.world_size
            dist.all_gather_object(parts, named)
            named = [reason for part in parts for reason in part or []]
        return named[:MAX_NAMED]
