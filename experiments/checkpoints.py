"""Checkpoints that survive a kill and say where they come from.

- :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file beside the target,
  flushes it to disk and renames it into place, so a killed run never leaves a truncated
  checkpoint; it loads with ``weights_only=True`` (tensors and plain containers only).
- :class:`RunState` stores in every checkpoint what resuming needs besides Lightning's own
  state: the MLflow run id (a resumed run logs into the same run), the stage's method and config
  hash (a checkpoint of another experiment is refused), and the random number generators (so
  the steps after a resume draw what they would have drawn).
- :class:`PeriodicCheckpoint` writes ``last.ckpt`` every ``every_n_steps`` optimiser steps.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from modules.base import load_checkpoint

LAST = "last.ckpt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupt, of another experiment, or in use."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to ``.<name>.tmp``, fsync, rename; load with ``weights_only=True``."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


def rng_state() -> dict[str, Any]:
    """torch, numpy and Python random states as tensors and plain values."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


class RunState(L.Callback):
    """Saves ``checkpoint["alignlab"]``: run id, method, config hash and RNG states; restores the
    RNG states when Lightning resumes from a checkpoint."""

    def __init__(self, run_id: str | None, method: str, config_hash: str) -> None:
        self.identity = {"run_id": run_id, "method": method, "config_hash": config_hash}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint["alignlab"] = {**self.identity, "rng": rng_state()}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("alignlab")
        if saved is not None:
            set_rng_state(saved["rng"])


def resume_identity(path: Path, method: str, config_hash: str) -> dict[str, Any]:
    """The identity stored in ``path``; refuses a checkpoint of another method or config."""
    checkpoint = load_checkpoint(str(path))
    saved = checkpoint.get("alignlab")
    if saved is None:
        raise ValueError(f"{path} is not an alignlab training checkpoint (no run identity)")
    if (saved["method"], saved["config_hash"]) != (method, config_hash):
        raise ValueError(
            f"{path} was written by method {saved['method']!r} with config hash "
            f"{saved['config_hash']}; this stage is {method!r} with {config_hash}: not resuming"
        )
    return {**saved, "global_step": checkpoint.get("global_step", 0)}


class PeriodicCheckpoint(L.Callback):
    """``<dirpath>/last.ckpt`` every ``every_n_steps`` optimiser steps (atomically, through the
    trainer's checkpoint IO), for ``resume=true`` after a crash or kill. Written as step n ends,
    where Lightning's resume bookkeeping expects it; the trainer logs step n's metrics just
    after, so a kill in that instant loses those logged values, not the training state."""

    def __init__(self, dirpath: Path, every_n_steps: int) -> None:
        self.path, self.every_n_steps = Path(dirpath) / LAST, every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            trainer.save_checkpoint(str(self.path))
