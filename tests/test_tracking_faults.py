"""A tracking store that fails never stops or stalls training: a server killed mid-run is
buffered (one warning), its calls replayed when it is back, or at the end logged to the local
store or written to a JSON file; a fresh sqlite store survives runs started together; an
unwritable store is named at once."""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lightning.pytorch.loggers import MLFlowLogger
from mlflow.tracking import MlflowClient

import experiments.tracking as tracking
from experiments.config import ConfigError
from experiments.run_page import rounded, ui_link
from experiments.tracking import ORIGINAL_RUN_TAG, Tracker, default_tracking_uri, unreachable

ROOT = Path(__file__).resolve().parents[1]
SERVE = ROOT / "mlflow" / "serve.sh"


def free_port() -> int:
    """A port nothing listens on (the OS picks a free one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """``bash mlflow/serve.sh PORT`` on a store folder, started and killed at will."""

    store: Path
    port: int
    proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server and wait until /health answers (~7 s)."""
        env = {
            **os.environ,
            "ALIGNLAB_MLFLOW_DIR": str(self.store),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        self.store.mkdir(parents=True, exist_ok=True)
        with (self.store / "server.log").open("a") as log_file:
            self.proc = subprocess.Popen(
                ["bash", str(SERVE), str(self.port)],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while unreachable(self.uri, timeout=1) is not None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"mlflow server did not come up:\n{self.log()[-3000:]}")
            time.sleep(0.25)

    def kill(self) -> None:
        """SIGKILL the server and its workers (its process group): a crash, not a shutdown."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=20)
        self.proc = None

    def log(self) -> str:
        return (self.store / "server.log").read_text()


@dataclass
class Outage:
    """The server of the three outage tests, killed after each of them opened its run on it:
    one start and one kill for all three (a start costs ~12 s) instead of one each."""

    server: Server
    unlogged: tuple[Tracker, str]  # "killed": its calls are written to a JSON file
    fallback: tuple[Tracker, str]  # "killed", with fallback_to_local
    comes_back: tuple[Tracker, str, MLFlowLogger]  # "comes-back" and its Lightning logger


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    server = Server(tmp_path_factory.mktemp("outage") / "server", free_port())
    server.start()
    try:
        tracker = Tracker(server.uri, "faults")
        unlogged = tracker.start_run("killed", {"alignlab.method": "clip"})
        tracker.log_metrics(unlogged, {"loss": -1.0}, step=0)
        fallback = Tracker(server.uri, "faults", fallback_to_local=True)
        fallback_run = fallback.start_run("killed", {"alignlab.method": "clip"})
        back = Tracker(server.uri, "faults")
        back_run = back.start_run("comes-back", {})
        logger = back.logger(back_run)
        server.kill()
        yield Outage(
            server, (tracker, unlogged), (fallback, fallback_run), (back, back_run, logger)
        )
    finally:
        server.kill()


@pytest.fixture
def local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``ALIGNLAB_MLFLOW_DIR`` (the local store, where unlogged calls are written) in tmp."""
    folder = tmp_path / "local"
    monkeypatch.setenv("ALIGNLAB_MLFLOW_DIR", str(folder))
    return folder


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "alignlab" and r.levelno >= logging.WARNING
    ]


def timed_metrics(tracker: Tracker, run_id: str, count: int) -> list[float]:
    """Log ``loss = step`` for ``count`` steps; the seconds each call took."""
    seconds = []
    for step in range(count):
        start = time.monotonic()
        tracker.log_metrics(run_id, {"loss": float(step)}, step=step)
        seconds.append(time.monotonic() - start)
    return seconds


def test_killed_server_never_blocks_and_flush_writes_what_it_missed(outage, local_store, caplog):
    server = outage.server
    tracker, run_id = outage.unlogged  # logged loss -1 at step 0, then the server was killed
    with caplog.at_level(logging.WARNING, logger="alignlab"):
        seconds = timed_metrics(tracker, run_id, 50)
        tracker.finish(run_id, True)
        (warning,) = warnings_of(caplog)  # one for the outage, not one per call
        tracker.flush()
    assert sum(seconds) < 15 and max(seconds[1:]) < 0.5  # the first one met MLflow's retries
    assert f"MLflow at {server.uri} does not answer" in warning
    assert "training continues" in warning

    path = local_store / f"mlflow-unlogged-{run_id}.json"
    record = json.loads(path.read_text())
    assert record["tracking_uri"] == server.uri and record["run_id"] == run_id
    *batches, end = record["calls"]
    assert [call["method"] for call in batches] == ["log_batch"] * 50
    metrics = [metric for call in batches for metric in call["args"]["metrics"]]
    assert [(m["key"], m["value"], m["step"]) for m in metrics] == [
        ("loss", float(step), step) for step in range(50)
    ]
    assert all(m["timestamp"] > 0 for m in metrics)
    assert end == {"method": "set_terminated", "args": {"run_id": run_id, "status": "FINISHED"}}
    assert str(path) in caplog.text
    tracker.flush()  # nothing kept any more: no second copy
    assert len(json.loads(path.read_text())["calls"]) == 51


def test_killed_server_with_fallback_logs_to_the_local_store(outage, local_store, caplog):
    tracker, run_id = outage.fallback  # started the run, then the server was killed
    with caplog.at_level(logging.WARNING, logger="alignlab"):
        timed_metrics(tracker, run_id, 10)
        later = tracker.start_run("started-while-down", {"alignlab.method": "clip"}, run_id)
        tracker.log_metrics(later, {"loss": 7.0}, step=3)
        for done in (run_id, later):
            tracker.set_tags(done, {"mlflow.note.content": "offline"})
            tracker.finish(done, "KILLED")
        tracker.flush()
    assert later.startswith("offline-")
    assert f"the kept logging went to the local store {default_tracking_uri()}" in caplog.text

    client = MlflowClient(default_tracking_uri())
    experiment = client.get_experiment_by_name("faults")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["killed", "started-while-down"]
    copy, child = runs["killed"], runs["started-while-down"]
    assert copy.data.tags[ORIGINAL_RUN_TAG] == run_id
    assert copy.data.tags["alignlab.method"] == "clip"
    assert child.data.tags["mlflow.parentRunId"] == copy.info.run_id
    history = client.get_metric_history(copy.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(s, float(s)) for s in range(10)]
    assert child.data.metrics == {"loss": 7.0}
    for run in (copy, child):
        assert run.info.status == "KILLED" and run.data.tags["mlflow.note.content"] == "offline"
    assert not list(local_store.glob("mlflow-unlogged-*.json"))


def test_server_back_gets_the_kept_calls_in_order(outage, local_store, caplog, monkeypatch):
    monkeypatch.setattr(tracking, "COOL_DOWN", 1.0)
    server = outage.server
    tracker, run_id, logger = outage.comes_back  # started the run, then the server was killed
    with caplog.at_level(logging.INFO, logger="alignlab"):
        for step in range(20):
            logger.log_metrics({"loss": step + 0.123456789}, step=step)
        logger.log_image(np.zeros((8, 8, 3), dtype=np.uint8), key="plots/val/pca", step=1)
        child = tracker.start_run("child", {}, run_id)
        tracker.log_metrics(child, {"acc": 1.0})
        server.start()  # same port, same store
    try:  # killed again at the end: the other outage tests expect it down, whatever the order
        with caplog.at_level(logging.INFO, logger="alignlab"):
            time.sleep(1.1)  # past the cool-down: the next call tries the server again
            logger.log_metrics({"loss": 20.0}, step=20)
        assert len(warnings_of(caplog)) == 1
        assert f"MLflow at {server.uri} answers again: sent 23 kept calls" in caplog.text

        client = MlflowClient(server.uri)
        history = client.get_metric_history(run_id, "loss")
        assert [(m.step, m.value) for m in history] == [
            (step, rounded(step + 0.123456789)) for step in range(20)
        ] + [(20, 20.0)]
        assert [m.timestamp for m in history] == sorted(m.timestamp for m in history)
        assert any(a.path.startswith("images") for a in client.list_artifacts(run_id))
        (nested,) = client.search_runs(
            [tracker.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'"
        )
        assert nested.info.run_name == "child" and nested.data.metrics == {"acc": 1.0}
        link = ui_link(server.uri, tracker.experiment_id, nested.info.run_id)
        assert tracker.run_url(child) == link
        assert child.startswith("offline-") and tracker.resolved(child) == nested.info.run_id
        assert tracker.run_url(run_id).endswith("?workflowType=machine_learning")
    finally:
        server.kill()
    assert "Traceback" not in server.log()


def test_logger_writes_through_the_tracker_and_leaves_the_status_to_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "logger")
    run_id = tracker.start_run("run", {})
    logger = tracker.logger(run_id)
    assert isinstance(logger, MLFlowLogger) and logger.run_id == run_id
    logger.log_metrics({"val/loss": 0.123456789, "note": "text"}, step=3)
    logger.log_hyperparams({"optim": {"lr": 0.001}})
    logger.log_image(np.zeros((8, 8, 3), dtype=np.uint8), key="plots/val/pca", step=1)
    plot = tmp_path / "pca.png"
    plot.write_bytes(b"\x89PNG")
    logger.experiment.log_artifact(run_id, str(plot), artifact_path="plots")  # as plots.py does
    logger.finalize("success")

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"  # tracker.finish ends it, not Lightning
    (metric,) = client.get_metric_history(run_id, "val/loss")
    assert (metric.value, metric.step) == (0.123457, 3)
    assert run.data.params == {"optim.lr": "0.001"}
    paths = {a.path for a in client.list_artifacts(run_id)}
    assert "images" in paths and "plots/pca.png" in {
        a.path for a in client.list_artifacts(run_id, "plots")
    }
    assert run.data.tags["alignlab.host"] == socket.gethostname()
    assert run.data.tags["alignlab.pid"] == str(os.getpid())


def test_refused_call_is_dropped_with_a_warning_and_logging_goes_on(tmp_path, caplog):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "refused")
    run_id = tracker.start_run("run", {})
    tracker.log_params(run_id, {"lr": 1})
    with caplog.at_level(logging.WARNING, logger="alignlab"):
        tracker.log_params(run_id, {"lr": 2})  # MLflow refuses to change a param
        tracker.log_metrics(run_id, {"loss": 1.0})
    (warning,) = warnings_of(caplog)
    assert "refused log_batch" in warning and "training continues" in warning
    assert MlflowClient(uri).get_run(run_id).data.metrics == {"loss": 1.0}
    assert not tracker._pending  # refused, not kept for later


def test_sqlite_run_url_says_how_to_browse_the_store(tmp_path, local_store):
    tracker = Tracker(None, "browse")
    run_id = tracker.start_run("run", {})
    link = ui_link(tracker.uri, tracker.experiment_id, run_id)
    assert link.startswith("http://127.0.0.1:5000/#/experiments/")
    assert tracker.run_url(run_id).endswith(f"browse it with `bash mlflow/serve.sh` at {link}")
    elsewhere = Tracker(f"sqlite:///{tmp_path / 'other' / 'mlflow.db'}", "browse")
    url = elsewhere.run_url(run_id)
    assert f"`ALIGNLAB_MLFLOW_DIR={tmp_path / 'other'} bash mlflow/serve.sh`" in url


def test_store_under_a_regular_file_is_named_at_once(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("ALIGNLAB_MLFLOW_DIR", str(blocker / "mlflow"))
    start = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        Tracker(None, "nowhere")
    assert time.monotonic() - start < 5
    assert f"cannot write the MLflow store {blocker / 'mlflow' / 'mlflow.db'}" in str(caught.value)
    assert f"{blocker} is a file, not a folder" in str(caught.value)


def test_read_only_store_folder_is_named_at_once(tmp_path, monkeypatch):
    """A folder without write permission (faked through os.access: root may write anyway)."""
    store = tmp_path / "readonly"
    store.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode: Path(path) != store and real_access(path, mode)
    )
    with pytest.raises(ConfigError) as caught:
        Tracker(f"sqlite:///{store / 'mlflow.db'}", "nowhere")
    assert f"the folder {store} is read-only" in str(caught.value)
    assert not (store / "mlflow.db").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders anyway")
def test_read_only_store_folder_is_named_at_once_for_real(tmp_path):
    store = tmp_path / "readonly"
    store.mkdir(mode=0o555)
    with pytest.raises(ConfigError, match="is read-only"):
        Tracker(f"sqlite:///{store / 'mlflow.db'}", "nowhere")


def open_stores_together(uris: list[str], barrier: Any, results: Any) -> None:
    """A spawned worker: a Tracker on each store, at the moment the other worker opens it."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only  # noqa: F401  (warm)

    for uri in uris:
        barrier.wait(timeout=120)
        try:
            results.put((uri, Tracker(uri, "race").experiment_id))
        except Exception as err:  # reported to the test, which fails on it
            results.put((uri, f"{type(err).__name__}: {err}"))


def test_runs_started_together_on_a_fresh_store_share_the_experiment(tmp_path):
    """Unlocked, MLflow's table creation races and one of two runs crashes (3 of 3 tries)."""
    uris = [f"sqlite:///{tmp_path / str(i) / 'mlflow.db'}" for i in range(3)]
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [
        context.Process(target=open_stores_together, args=(uris, barrier, results))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    try:
        got = [results.get(timeout=180) for _ in range(2 * len(uris))]
    finally:
        for worker in workers:
            worker.join(timeout=30)
            worker.kill()
    for uri in uris:
        ids = [experiment_id for where, experiment_id in got if where == uri]
        assert ids == ["1", "1"], ids
        assert Path(uri.removeprefix("sqlite:///") + ".lock").is_file()


def test_mlflow_http_retries_are_bounded_unless_the_user_set_them():
    code = "import modules.env, os; print([os.environ[f'MLFLOW_HTTP_REQUEST_{k}'] for k in %r])"
    keys = ("MAX_RETRIES", "BACKOFF_FACTOR", "TIMEOUT")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST_")}
    run = [sys.executable, "-c", code % (keys,)]
    out = subprocess.run(run, env=env, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['2', '1', '10']"
    env["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "60"
    out = subprocess.run(run, env=env, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['2', '1', '60']"
