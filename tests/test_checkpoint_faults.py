"""Checkpoints under faults: two runs in one stage directory, a corrupt last.ckpt, SIGTERM."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from experiments import checkpoints
from experiments.checkpoints import (
    LAST,
    AtomicCheckpointIO,
    CheckpointError,
    PeriodicCheckpoint,
    RunState,
    resume_identity,
    stage_lock,
)

RESTART = "delete it to start the stage again, or run without resume=true"

# a second process that takes the stage lock as stage_lock does, says so, and holds it until
# its stdin closes (plain Python: it starts in milliseconds, without torch or lightning)
HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys
    with open(sys.argv[1], "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        print("held", flush=True)
        sys.stdin.read()
    """
)
# a second process that tries the lock once and prints whether it got it and what the file says
PROBE = textwrap.dedent(
    """
    import fcntl, sys
    with open(sys.argv[1], "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            print("free")
        except BlockingIOError:
            handle.seek(0)
            print("held by", handle.read())
    """
)


def identity_checkpoint(path: Path, **identity: str) -> None:
    AtomicCheckpointIO().save_checkpoint(
        {"alignlab": identity, "global_step": 3, "weights": torch.zeros(64)}, path
    )


def one_line_error(info: pytest.ExceptionInfo) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------- temporary files


def test_the_temporary_file_is_named_after_the_process(tmp_path, monkeypatch):
    """Two runs writing one directory each write their own temporary file: another process's
    half-written one is neither reused nor removed."""
    other = tmp_path / f".{LAST}.{os.getpid() + 1}.tmp"
    other.write_bytes(b"half written by another run")
    replaced = []
    real_replace = os.replace

    def spy(src: str | Path, dst: str | Path) -> None:
        replaced.append(Path(src))
        real_replace(src, dst)

    monkeypatch.setattr(checkpoints.os, "replace", spy)
    identity_checkpoint(tmp_path / LAST, run_id="r", method="clip", config_hash="aaa")
    assert [p.name for p in replaced] == [f".{LAST}.{os.getpid()}.tmp"]
    assert other.read_bytes() == b"half written by another run"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([LAST, other.name])
    assert resume_identity(tmp_path / LAST, "clip", "aaa")["global_step"] == 3


# ----------------------------------------------------------------------------- stage lock


def test_stage_lock_holds_this_pid_and_is_released_on_exit(tmp_path):
    stage_dir = tmp_path / "main-abc"
    with stage_lock(stage_dir):
        assert (stage_dir / ".lock").read_text() == str(os.getpid())
        probe = subprocess.run(
            [sys.executable, "-c", PROBE, str(stage_dir / ".lock")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert probe.stdout.strip() == f"held by {os.getpid()}"
    with pytest.raises(RuntimeError, match="inside"), stage_lock(stage_dir):
        raise RuntimeError("inside")  # released when the block fails, too
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(stage_dir / ".lock")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert probe.stdout.strip() == "free"


def test_a_stage_another_process_holds_is_refused_with_its_pid(tmp_path):
    stage_dir = tmp_path / "main-abc"
    stage_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(stage_dir / ".lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CheckpointError) as info, stage_lock(stage_dir):
            pytest.fail("entered a stage another process holds")
        assert one_line_error(info) == (
            f"{stage_dir} is in use by another run (pid {holder.pid}); wait for it or set "
            "output_dir=... to use another directory"
        )
    finally:
        holder.communicate("", timeout=30)  # closing its stdin lets it exit, releasing the lock
    with stage_lock(stage_dir):  # free again once the other run has ended
        assert (stage_dir / ".lock").read_text() == str(os.getpid())


# ----------------------------------------------------------------------------- corrupt last.ckpt


def broken_files(tmp_path: Path) -> list[Path]:
    """A truncated checkpoint, garbage bytes and an empty file, each named last.ckpt."""
    whole = tmp_path / "whole" / LAST
    identity_checkpoint(whole, run_id="r", method="clip", config_hash="aaa")
    files = []
    for name, data in [
        ("truncated", whole.read_bytes()[: whole.stat().st_size // 2]),
        ("garbage", b"not a checkpoint \x00\x01\xff" * 20),
        ("empty", b""),
    ]:
        path = tmp_path / name / LAST
        path.parent.mkdir()
        path.write_bytes(data)
        files.append(path)
    return files


def test_a_corrupt_last_checkpoint_is_a_one_line_checkpoint_error(tmp_path):
    for path in broken_files(tmp_path):
        with pytest.raises(CheckpointError) as info:
            resume_identity(path, "clip", "aaa")
        message = one_line_error(info)
        assert message.startswith(f"{path} is corrupt (it does not load: ")
        assert message.endswith(RESTART)
        with pytest.raises(CheckpointError, match="is corrupt"):
            AtomicCheckpointIO().load_checkpoint(path)  # what Lightning resumes through


def test_checkpoints_that_are_not_this_stages_are_checkpoint_errors(tmp_path):
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, plain)
    with pytest.raises(CheckpointError) as info:
        resume_identity(plain, "clip", "aaa")
    assert one_line_error(info) == (
        f"{plain} is not an alignlab training checkpoint (no run identity); {RESTART}"
    )
    listed = tmp_path / "list.ckpt"
    torch.save([1, 2], listed)
    with pytest.raises(CheckpointError, match="is not a training checkpoint"):
        resume_identity(listed, "clip", "aaa")
    other = tmp_path / LAST
    identity_checkpoint(other, run_id="r", method="clip", config_hash="aaa")
    with pytest.raises(CheckpointError, match="written by method 'clip' with config hash aaa"):
        resume_identity(other, "clip_refine", "bbb")


def test_a_missing_checkpoint_stays_a_file_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        resume_identity(tmp_path / LAST, "clip", "aaa")


# ----------------------------------------------------------------------------- SIGTERM


def mock_trainer(step: int, sigterm: bool, saved: list[int]) -> SimpleNamespace:
    """What PeriodicCheckpoint uses of a single-process trainer."""
    return SimpleNamespace(
        global_step=step,
        received_sigterm=sigterm,
        strategy=SimpleNamespace(reduce_boolean_decision=lambda decision, all=True: decision),
        save_checkpoint=lambda path: saved.append(step),
    )


@pytest.mark.parametrize(
    ("step", "sigterm", "saves"),
    [(7, False, False), (10, False, True), (7, True, True), (10, True, True)],
)
def test_periodic_checkpoint_saves_every_n_steps_and_on_sigterm(tmp_path, step, sigterm, saves):
    saved: list[int] = []
    callback = PeriodicCheckpoint(tmp_path, every_n_steps=5)
    callback.on_train_batch_end(mock_trainer(step, sigterm, saved), None, None, None, 0)
    assert saved == ([step] if saves else [])


class Regression(L.LightningModule):
    """The smallest trainable module: one linear layer on random points."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(torch.randn(10, 2), batch_size=1)


class SigtermAt(L.Callback):
    """Notes a SIGTERM at one step's end, as Lightning's own signal handler does."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            trainer._signal_connector.received_sigterm = True


def test_sigterm_leaves_last_checkpoint_at_that_step(tmp_path):
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],
        callbacks=[SigtermAt(3), PeriodicCheckpoint(tmp_path, every_n_steps=100)],
        default_root_dir=tmp_path,
    )
    with pytest.raises(SIGTERMException):
        trainer.fit(Regression())
    checkpoint = torch.load(tmp_path / LAST, weights_only=True)
    assert checkpoint["global_step"] == 3


def test_run_state_saves_the_store_s_id_of_a_run_started_offline():
    """A run started while the tracking server was down has a stand-in id; once the store made
    it, checkpoints carry the real id, so resume=true continues that run."""
    ids = {"offline-1": "a1b2"}
    state = RunState("offline-1", "clip", "hash", lambda run_id: ids.get(run_id, run_id))
    checkpoint: dict = {}
    state.on_save_checkpoint(None, None, checkpoint)
    assert checkpoint["alignlab"]["run_id"] == "a1b2"
    ids.clear()  # still down: the stand-in is kept
    state.on_save_checkpoint(None, None, checkpoint)
    assert checkpoint["alignlab"]["run_id"] == "offline-1"
