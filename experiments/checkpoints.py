"""Checkpoints that survive a kill and say where they come from.

- :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file beside the target
  (named after the process, so two runs writing one directory never share it), flushes it to
  disk and renames it into place, so a killed run never leaves a truncated checkpoint; it loads
  with ``weights_only=True`` (tensors and plain containers only).
- :class:`RunState` stores in every checkpoint what resuming needs besides Lightning's own
  state: the MLflow run id (a resumed run logs into the same run), the stage's method and config
  hash (a checkpoint of another experiment is refused), and the random number generators (so
  the steps after a resume draw what they would have drawn).
- :class:`PeriodicCheckpoint` writes ``last.ckpt`` every ``every_n_steps`` optimiser steps and
  at the batch boundary where a SIGTERM stops training.
- :func:`stage_lock` keeps a second run out of a stage directory another run is writing.
- A checkpoint that cannot be resumed from (corrupt, of another experiment, in use) is a
  :class:`CheckpointError` naming the file and what to do.
"""

from __future__ import annotations

import fcntl
import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from modules.base import load_checkpoint

LAST = "last.ckpt"
LOCK = ".lock"
RESTART = "delete it to start the stage again, or run without resume=true"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupt, of another experiment, or in use."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to ``.<name>.<pid>.tmp``, fsync, rename; load with ``weights_only=True`` (a file
    that does not load is a :class:`CheckpointError`: Lightning loads only the resumed one)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return read_checkpoint(Path(path), map_location or "cpu")


def read_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint at ``path`` (tensors and plain containers only) for resuming; one that
    does not load (truncated, garbage) is a :class:`CheckpointError` saying what to do."""
    try:
        checkpoint = load_checkpoint(str(path), map_location)
    except OSError:
        raise  # missing or unreadable, not corrupt
    except Exception as err:  # torch's errors depend on how the file is broken (even IndexError)
        raise CheckpointError(
            f"{path} is corrupt (it does not load: {type(err).__name__}); {RESTART}"
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} is not a training checkpoint; {RESTART}")
    return checkpoint


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

    def __init__(
        self,
        run_id: str | None,
        method: str,
        config_hash: str,
        resolve: Callable[[str | None], str | None] = lambda run_id: run_id,
    ) -> None:
        """``resolve`` maps the run id to the store's own at save time: a run started while
        the tracking server was down has a stand-in id until it answers again."""
        self.identity = {"run_id": run_id, "method": method, "config_hash": config_hash}
        self.resolve = resolve

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        run_id = self.resolve(self.identity["run_id"])
        checkpoint["alignlab"] = {**self.identity, "run_id": run_id, "rng": rng_state()}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("alignlab")
        if saved is not None:
            set_rng_state(saved["rng"])


def resume_identity(path: Path, method: str, config_hash: str) -> dict[str, Any]:
    """The identity stored in ``path``; refuses a corrupt checkpoint, or one of another method
    or config."""
    checkpoint = read_checkpoint(Path(path))
    saved = checkpoint.get("alignlab")
    if not isinstance(saved, dict) or not {"method", "config_hash"} <= saved.keys():
        raise CheckpointError(
            f"{path} is not an alignlab training checkpoint (no run identity); {RESTART}"
        )
    if (saved["method"], saved["config_hash"]) != (method, config_hash):
        raise CheckpointError(
            f"{path} was written by method {saved['method']!r} with config hash "
            f"{saved['config_hash']}; this stage is {method!r} with {config_hash}: not resuming"
        )
    return {**saved, "global_step": checkpoint.get("global_step", 0)}


class PeriodicCheckpoint(L.Callback):
    """``<dirpath>/last.ckpt`` every ``every_n_steps`` optimiser steps (atomically, through the
    trainer's checkpoint IO), for ``resume=true`` after a crash or kill. Written as step n ends,
    where Lightning's resume bookkeeping expects it; the trainer logs step n's metrics just
    after, so a kill in that instant loses those logged values, not the training state.

    Also written at the batch end where Lightning has noted a SIGTERM (it stops training just
    after), so a terminated run resumes from that step, not from the last multiple of n."""

    def __init__(self, dirpath: Path, every_n_steps: int) -> None:
        self.path, self.every_n_steps = Path(dirpath) / LAST, every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every_n_steps == 0 or _terminating(trainer):
            trainer.save_checkpoint(str(self.path))


def _terminating(trainer: L.Trainer) -> bool:
    """Whether any process has received SIGTERM: decided together (saving is collective, so
    under DDP every rank must agree to save, whichever rank the signal reached first)."""
    return trainer.strategy.reduce_boolean_decision(trainer.received_sigterm, all=False)


@contextmanager
def stage_lock(stage_dir: Path) -> Iterator[None]:
    """Hold ``<stage_dir>/.lock`` (an exclusive ``flock``, the holder's pid written inside)
    while this run writes the stage, so a second run of the same stage and output_dir stops
    instead of overwriting its checkpoints. The system drops the lock if the process dies."""
    stage_dir = Path(stage_dir)
    try:
        stage_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CheckpointError(
            f"cannot create the stage folder {stage_dir} ({type(err).__name__}: "
            f"{err.strerror or err}); set output_dir=... to a folder this run can write"
        ) from None
    with open(stage_dir / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise CheckpointError(
                f"{stage_dir} is in use by another run (pid {holder}); wait for it or set "
                "output_dir=... to use another directory"
            ) from None
        _write_pid(handle)
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_pid(handle: Any) -> None:
    """This process's id as the lock file's only content (opened for appending: at offset 0)."""
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
