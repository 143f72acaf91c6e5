"""How a run ends when something stops it: SIGTERM (exit 143, run KILLED, a resume command),
a failure after its MLflow run exists (run FAILED), and resuming from another directory."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from lightning.pytorch.utilities.exceptions import SIGTERMException
from mlflow.tracking import MlflowClient

import experiments.stages as stages_module
from experiments.checkpoints import CheckpointError, stage_lock
from experiments.config import REPO_ROOT, load_experiment
from experiments.stages import Interrupted, Invocation, run_experiment, stage_hashes
from tests.test_resume import TINY

RUN = REPO_ROOT / "experiments" / "run.py"
CLIP = REPO_ROOT / "experiments" / "clip.yaml"


def tiny_clip(tmp_path: Path, experiment: str, *extra: str) -> list[str]:
    """Overrides of a tiny clip.yaml run with its outputs and MLflow store in ``tmp_path``."""
    return [
        *TINY,
        f"output_dir={tmp_path / 'out'}",
        f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"logger.experiment_name={experiment}",
        *extra,  # last: they win
    ]


def runs_of(store: Path, experiment: str) -> list:
    client = MlflowClient(f"sqlite:///{store}")
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def test_sigterm_exits_143_marks_the_run_killed_and_resumes_from_another_directory(tmp_path):
    """SIGTERM mid-training: exit 143, one line naming the checkpoint and the resume command,
    the run KILLED. The same command with resume=true, started from another working directory
    with the same relative output_dir, continues that run to FINISHED."""
    relative = f"outputs/pytest-sigterm-{uuid.uuid4().hex[:8]}"
    store = tmp_path / "mlflow.db"
    args = [
        str(RUN),
        str(REPO_ROOT / "experiments" / "clip.yaml"),
        *[o for o in TINY if not o.startswith("trainer.max_epochs")],
        "trainer.max_epochs=4",  # 8 steps: killed after the checkpoint at step 2
        "checkpoint_every_n_steps=2",
        f"output_dir={relative}",
        f"logger.tracking_uri=sqlite:///{store}",
        "logger.experiment_name=sigterm",
    ]
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    try:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=first,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while not list((REPO_ROOT / relative).glob("main-*/last.ckpt")):
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 143, err[-2000:]
        (line,) = [x for x in err.splitlines() if x.startswith("stopped by SIGTERM")]
        assert "run marked KILLED" in line and "last checkpoint" in line
        assert line.endswith("resume=true`")
        assert not (first / "outputs").exists()  # outputs are under the checkout
        (run,) = runs_of(store, "sigterm")
        assert run.info.status == "KILLED"

        resumed = subprocess.run(
            [sys.executable, *args, "resume=true"],
            cwd=second,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert "resuming from" in resumed.stderr
        (again,) = runs_of(store, "sigterm")
        assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    finally:
        shutil.rmtree(REPO_ROOT / relative, ignore_errors=True)


def test_sigterm_outside_the_trainer_stops_through_the_same_path(tmp_path, monkeypatch):
    """SIGTERM while the data is prepared (no trainer yet): run.py's handler raises Lightning's
    SIGTERMException, so the run that exists is marked KILLED and the stage says so."""
    from experiments import run as run_script

    previous = signal.signal(signal.SIGTERM, run_script._terminate)
    try:

        def terminated(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends

        monkeypatch.setattr(stages_module, "_open_run", terminated)
        stages = load_experiment(CLIP, tiny_clip(tmp_path, "early"))
        with pytest.raises(Interrupted) as stopped:
            run_experiment(stages, invocation=Invocation([]))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stopped.value.signal_name == "SIGTERM" and stopped.value.checkpoint is None
    assert isinstance(stopped.value.__cause__, SIGTERMException)
    (run,) = runs_of(tmp_path / "mlflow.db", "early")
    assert run.info.status == "KILLED"
    message = run_script.interrupted_message(stopped.value, ["experiments/clip.yaml"])
    assert "before its first checkpoint" in message


def test_an_output_dir_that_cannot_be_made_stops_before_any_run(tmp_path):
    """An output_dir under a file (chmod does not bind root): one checkpoint error naming the
    folder, before an MLflow run exists (none is left RUNNING)."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    stages = load_experiment(CLIP, tiny_clip(tmp_path, "failed", f"output_dir={blocker / 'out'}"))
    with pytest.raises(CheckpointError, match="cannot create the stage folder .*file/out"):
        run_experiment(stages)
    assert runs_of(tmp_path / "mlflow.db", "failed") == []


def test_a_failure_after_the_run_exists_marks_it_failed(tmp_path, monkeypatch):
    """Whatever fails once the stage's MLflow run exists (here the trainer) ends it FAILED."""

    def broken_fit(*args, **kwargs):
        raise RuntimeError("the trainer broke")

    monkeypatch.setattr(stages_module, "_fit", broken_fit)
    stages = load_experiment(CLIP, tiny_clip(tmp_path, "failed"))
    with pytest.raises(RuntimeError, match="the trainer broke"):
        run_experiment(stages)
    (run,) = runs_of(tmp_path / "mlflow.db", "failed")
    assert run.info.status == "FAILED"


def test_a_chain_interrupted_in_a_later_stage_marks_parent_and_stage_killed(tmp_path, monkeypatch):
    """Ctrl+C (Lightning's SystemExit(1)) in the second stage: stage run and parent run KILLED,
    the finished first stage FINISHED."""
    from tests.test_experiments import tiny

    real_fit = stages_module._fit
    calls = []

    def fit_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise SystemExit(1)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(stages_module, "_fit", fit_then_interrupt)
    overrides = tiny(tmp_path, "logger.experiment_name=chain")
    stages = load_experiment(REPO_ROOT / "experiments" / "hycd.yaml", overrides)
    with pytest.raises(Interrupted) as stopped:
        run_experiment(stages)
    assert stopped.value.signal_name == "SIGINT" and stopped.value.stage == "refine"
    runs = runs_of(tmp_path / "mlflow.db", "chain")
    status = {r.data.tags.get("alignlab.stage", "parent"): r.info.status for r in runs}
    assert status == {"parent": "KILLED", "pretrain": "FINISHED", "refine": "KILLED"}


def test_a_malformed_manifest_is_one_data_error_line_and_exit_2(tmp_path):
    """A JSONL manifest with a broken line: `data error: <file>:<line>: ...`, exit 2, no
    traceback, and no MLflow run left behind."""
    from tests.test_experiments import write_jsonl_dataset

    write_jsonl_dataset(tmp_path / "data")
    manifest = tmp_path / "data" / "train.jsonl"
    manifest.write_text(manifest.read_text() + "{not json\n")
    broken_line = len(manifest.read_text().splitlines())
    data = ("data.format=jsonl", f"data.root={tmp_path / 'data'}")
    done = subprocess.run(
        [sys.executable, str(RUN), str(CLIP), *tiny_clip(tmp_path, "bad-data", *data)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"data error: {manifest}:{broken_line}"), last
    assert "Traceback" not in done.stderr
    assert all(r.info.status != "RUNNING" for r in runs_of(tmp_path / "mlflow.db", "bad-data"))


def test_a_stage_another_run_is_writing_is_refused_in_one_line(tmp_path):
    """The same stage and output_dir while another process writes it (here this test holds
    its lock): `checkpoint error: ... in use by another run (pid N)`, exit 2, no MLflow run."""
    overrides = tiny_clip(tmp_path, "twin")
    stages = load_experiment(CLIP, overrides)
    stage = stages[-1]
    with stage_lock(tmp_path / "out" / f"{stage.name}-{stage_hashes(stages)[stage.name]}"):
        done = subprocess.run(
            [sys.executable, str(RUN), str(CLIP), *overrides],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("checkpoint error: ") and f"(pid {os.getpid()})" in last, last
    assert runs_of(tmp_path / "mlflow.db", "twin") == []
