"""MLflow bookkeeping: the experiment, parent and stage runs, params and artifacts.

Lightning logs the metrics of a stage through ``Tracker.logger`` into a run created here (by id),
so a chained experiment shows up as one parent run with a nested run per stage. Under DDP every
rank runs the same script; only global rank 0 talks to MLflow (the others get a silent tracker).

Once a tracker is made, MLflow never stops or stalls training: a write the store does not take
is kept (one warning per outage), sent again when the store answers, and at the end of a stage
(``flush``) logged to the local store (``fallback_to_local``) or written to a JSON file.
"""

from __future__ import annotations

import modules.env  # noqa: F401  (before mlflow)

import contextlib
import fcntl
import functools
import http.client
import inspect
import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from argparse import Namespace
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
import sqlalchemy.exc
import urllib3.exceptions
from mlflow.entities import Metric, Param
from mlflow.entities._mlflow_object import _MlflowObject
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from experiments.config import REPO_ROOT, ConfigError, flatten
from experiments.run_page import rounded, ui_link

if TYPE_CHECKING:
    from lightning.pytorch.loggers import MLFlowLogger

log = logging.getLogger("alignlab")

STORE_DIR = REPO_ROOT / "mlflow"
OFFLINE = "offline-"  # prefix of the stand-in id of a run started while the store is down
COOL_DOWN = 30.0  # seconds a store that stopped answering is left alone before the next try
ORIGINAL_RUN_TAG = "alignlab.original_run_id"  # on a run recreated in the local store
# what a store that fails raises: MLflow's errors (HTTP ones once its retries are spent),
# network and file errors, sqlite's
STORE_ERRORS = (
    MlflowException,
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    OSError,
    sqlite3.Error,
    sqlalchemy.exc.SQLAlchemyError,
)


def store_dir() -> Path:
    """The local store's folder: ``$ALIGNLAB_MLFLOW_DIR`` if set, else ``mlflow/`` of the
    checkout (the folder ``mlflow/serve.sh`` serves, under the same variable)."""
    return Path(os.environ.get("ALIGNLAB_MLFLOW_DIR") or STORE_DIR).resolve()


def default_tracking_uri() -> str:
    """The project's local store: ``sqlite:///<store_dir()>/mlflow.db``."""
    return f"sqlite:///{store_dir() / 'mlflow.db'}"


def unreachable(uri: str, timeout: float = 5.0) -> str | None:
    """Why the MLflow server at an ``http(s)://`` URI does not answer (None if it does).

    One plain GET of ``/health`` with a short timeout: MLflow's own client retries a dead
    server before it gives up. Other URIs (sqlite, file) are not probed.
    """
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return None
    except urllib.error.HTTPError as err:  # 401/403: a server that wants the client's credentials
        return None if err.code in (401, 403) else f"HTTP {err.code} {err.reason} from /health"
    except urllib.error.URLError as err:
        return str(err.reason)
    except OSError as err:  # timeouts and resets while reading
        return str(err) or type(err).__name__
    except (ValueError, http.client.HTTPException) as err:  # a malformed URI, a garbled answer
        return f"{type(err).__name__}: {err}"


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def _unwritable(path: Path) -> str | None:
    """Why file ``path`` cannot be created or written (None if it can): checked up front, as
    MLflow retries an unwritable sqlite store for minutes and then does not name it."""
    if path.exists() and not os.access(path, os.W_OK):
        return f"{path} is read-only"
    folder = next(parent for parent in path.absolute().parents if parent.exists())
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {folder} is read-only"
    return None


def check_writable(uri: str) -> None:
    """Raise ``ConfigError`` naming a sqlite store that cannot be written (other stores pass)."""
    db = _sqlite_path(uri)
    problem = None if db is None else _unwritable(db)
    if problem is not None:
        raise ConfigError(
            f"logger.tracking_uri: cannot write the MLflow store {db.absolute()} ({problem}); "
            "point ALIGNLAB_MLFLOW_DIR or logger.tracking_uri at a writable place"
        )


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Hold ``<db>.lock`` (a sqlite store) across processes: runs started together on a fresh
    store would race in MLflow's table creation and migrations, and one would crash."""
    db = _sqlite_path(uri)
    if db is None:
        yield
        return
    with open(f"{db}.lock", "a") as handle:  # closing it releases the lock
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _experiment(client: MlflowClient, uri: str, name: str) -> str:
    """The id of experiment ``name``, created if absent. Runs started together (seeds in
    parallel) may race to create it: the loser finds the winner's."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # A sqlite store keeps its artifacts beside it (MLflow would use ./mlruns of the
    # current directory); a server decides for itself.
    db = _sqlite_path(uri)
    location = None if db is None else (db.parent / "artifacts" / name).resolve().as_uri()
    try:
        return client.create_experiment(name, location)
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def open_store(uri: str, experiment: str) -> tuple[MlflowClient, str]:
    """A client of ``uri`` and the id of ``experiment`` there (created if absent), made under
    the store's lock so that runs started together on a fresh sqlite store both succeed."""
    check_writable(uri)
    db = _sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    with _store_lock(uri):
        client = MlflowClient(uri)
        return client, _experiment(client, uri, experiment)


def git_state() -> dict[str, str]:
    """Commit and dirtiness of the checkout, if it is one."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"mlflow.source.git.commit": commit, "alignlab.git_dirty": str(bool(dirty)).lower()}


def process_tags() -> dict[str, str]:
    """Which process runs a run: ``compare.py`` marks a RUNNING run whose process is gone DEAD."""
    return {"alignlab.host": socket.gethostname(), "alignlab.pid": str(os.getpid())}


def _brief(err: BaseException) -> str:
    """An error in one short line (MLflow's messages run over many)."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return first if len(first) <= 200 else first[:197] + "..."


def _rejected(err: BaseException) -> bool:
    """Whether the store answered and refused the call (a 4xx other than 429): sending it
    again cannot help, so it is dropped rather than kept."""
    if not isinstance(err, MlflowException):
        return False
    status = err.get_http_status_code()
    return 400 <= status < 500 and status != 429


def _jsonable(value: Any) -> Any:
    """``value`` for a JSON file: MLflow entities as their fields, paths as strings, and what
    JSON cannot hold (an image) as its type."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, _MlflowObject):
        return {key: _jsonable(item) for key, item in value if item is not None}
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return f"<{type(value).__name__}: not saved>"


@dataclass
class _Call:
    """One MlflowClient write, kept while the store does not take it."""

    method: str
    args: tuple
    kwargs: dict[str, Any] = field(default_factory=dict)
    new_run: str | None = None  # create_run: the id handed out before the store made the run

    def run_id(self) -> str | None:
        """The run the call writes to (None: the experiment)."""
        if self.method == "create_run":
            return self.new_run
        return None if self.method == "set_experiment_tag" else self.args[0]


class Tracker:
    """Creates runs in one MLflow experiment and logs what Lightning's logger does not."""

    def __init__(
        self, tracking_uri: str | None, experiment_name: str, fallback_to_local: bool = False
    ) -> None:
        """Check that the store answers and can be written (before any training) and get or
        create the experiment.

        An unreachable server raises ``ConfigError`` naming the URI, or with
        ``fallback_to_local`` logs a warning and uses the local store instead. An unwritable
        sqlite store raises ``ConfigError`` naming its path.
        """
        from lightning.pytorch.utilities.rank_zero import rank_zero_only  # lazy: ~10 s import

        self.uri = tracking_uri or default_tracking_uri()
        self.experiment_name = experiment_name
        self.fallback_to_local = fallback_to_local
        self.active = rank_zero_only.rank == 0
        self._pending: list[_Call] = []  # writes the store did not take yet, in order
        self._down = False  # the store stopped answering (and it was said once)
        self._retry_at = 0.0  # time.monotonic() of the next try while down
        self._ids: dict[str, str] = {}  # id handed out by start_run while down -> the store's
        self._runs: dict[str, tuple[str, dict[str, str]]] = {}  # runs started: name, tags
        self._local: dict[str, str] = {}  # run or experiment id -> its copy in the local store
        self._local_client: MlflowClient | None = None
        problem = unreachable(self.uri)  # on every rank, so all ranks agree on the URI
        if problem is not None:
            if not fallback_to_local:
                raise ConfigError(
                    f"logger.tracking_uri: cannot reach MLflow at {self.uri} ({problem}); "
                    "start the server (bash mlflow/serve.sh) or set logger.fallback_to_local=true"
                )
            if self.active:
                log.warning(
                    "MLflow at %s is unreachable (%s): falling back to the local store %s",
                    self.uri,
                    problem,
                    default_tracking_uri(),
                )
            self.uri = default_tracking_uri()
        if not self.active:
            return
        self.client, self.experiment_id = open_store(self.uri, experiment_name)

    def start_run(
        self, name: str, tags: dict[str, str], parent_id: str | None = None
    ) -> str | None:
        """A new run (nested under ``parent_id`` if given); returns its id (None off rank 0).

        While the store is down the run is made once it answers again; until then its id is a
        stand-in (``offline-<hex>``) that the tracker maps to the real one.
        """
        if not self.active:
            return None
        tags = {**git_state(), "alignlab.command": " ".join(sys.argv), **process_tags(), **tags}
        if parent_id is not None:
            tags["mlflow.parentRunId"] = parent_id
        stand_in = f"{OFFLINE}{uuid.uuid4().hex}"
        kwargs = {"run_name": name, "tags": tags}
        run = self._submit(_Call("create_run", (self.experiment_id,), kwargs, stand_in))
        run_id = stand_in if run is None else run.info.run_id
        self._runs[run_id] = (name, tags)
        return run_id

    def log_params(self, run_id: str, config: dict[str, Any]) -> None:
        """The flattened config as params (values truncated to MLflow's length limit)."""
        params = [
            Param(key, str(value)[:MAX_PARAM_VAL_LENGTH]) for key, value in flatten(config).items()
        ]
        for start in range(0, len(params), 100):
            self._write("log_batch", run_id, params=params[start : start + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        """Metrics at ``step``, rounded to 6 significant digits (float32 noise beyond), stamped
        now (also when the store takes them later)."""
        stamp = int(time.time() * 1000)
        rows = [Metric(key, rounded(float(value)), stamp, step) for key, value in metrics.items()]
        for start in range(0, len(rows), 500):
            self._write("log_batch", run_id, metrics=rows[start : start + 500])

    def set_tags(self, run_id: str | None, tags: dict[str, str]) -> None:
        if run_id is None:
            return
        for key, value in tags.items():
            self._write("set_tag", run_id, key, value)

    def set_experiment_tags(self, tags: dict[str, str]) -> None:
        if not self.active:
            return
        for key, value in tags.items():
            self._write("set_experiment_tag", self.experiment_id, key, value)

    def log_inputs(self, run_id: str | None, datasets: list) -> None:
        if run_id is not None:
            self._write("log_inputs", run_id, datasets)

    def log_artifact(self, run_id: str, path: Path, folder: str | None = None) -> None:
        self._write("log_artifact", run_id, str(path), folder)

    def log_image(self, run_id: str | None, image: Any, key: str, step: int) -> None:
        """A PIL image or numpy array under ``key`` at ``step`` (the UI's image slider)."""
        if run_id is not None:
            stamp = int(time.time() * 1000)
            self._write("log_image", run_id, image, key=key, step=step, timestamp=stamp)

    def finish(self, run_id: str | None, status: bool | str) -> None:
        """End the run: True/False for FINISHED/FAILED, or an MLflow status by name."""
        if isinstance(status, bool):
            status = "FINISHED" if status else "FAILED"
        if run_id is not None:
            self._write("set_terminated", run_id, status)

    def find_unfinished(self, tags: dict[str, str]) -> str | None:
        """The newest run of the experiment with all ``tags`` that did not finish (a killed or
        failed run to resume), or None."""
        if not self.active:
            return None
        query = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
        for run in self.client.search_runs(
            [self.experiment_id], query, order_by=["attributes.start_time DESC"]
        ):
            if run.info.status != "FINISHED":
                return run.info.run_id
        return None

    def children(self, parent_id: str) -> set[str]:
        """Ids of the runs nested under ``parent_id``."""
        if not self.active:
            return set()
        query = f"tags.`mlflow.parentRunId` = '{self._ids.get(parent_id, parent_id)}'"
        return {run.info.run_id for run in self.client.search_runs([self.experiment_id], query)}

    def reopen(self, run_id: str | None) -> None:
        """Mark a run (of a resumed stage) as running again; it keeps its params and history."""
        if run_id is not None:
            self._write("update_run", run_id, status="RUNNING")
            self.set_tags(run_id, process_tags())  # compare.py tells a live run from a dead one

    def run_url(self, run_id: str) -> str:
        """Where to find the run: its UI link for a server; for sqlite the store, and how to
        browse it (``mlflow/serve.sh``) with the link that gives. Empty off rank 0."""
        if not self.active:
            return ""
        run_id = self._ids.get(run_id, run_id)
        link = ui_link(self.uri, self.experiment_id, run_id)
        if self.uri.startswith(("http://", "https://")):
            return link
        where = f"{self.uri} (experiment {self.experiment_name!r}, run {run_id})"
        db = _sqlite_path(self.uri)
        if db is None:
            return where
        serve = "bash mlflow/serve.sh"
        if db.resolve().parent != store_dir():
            serve = f"ALIGNLAB_MLFLOW_DIR={db.resolve().parent} {serve}"
        return f"{where}; browse it with `{serve}` at {link}"

    def resolved(self, run_id: str | None) -> str | None:
        """The store's id of a run: a stand-in (started while the store was down) is replaced
        once the run was made, else returned as it is."""
        return self._ids.get(run_id, run_id) if run_id is not None else None

    def logger(self, run_id: str | None) -> MLFlowLogger:
        """Lightning's MLflow logger for the existing run ``run_id``, logging through this
        tracker (buffered while the store is down; metrics rounded to 6 digits). It leaves the
        run's status to ``finish``."""
        return _logger_class()(self, run_id)

    def flush(self, folder: Path | None = None) -> None:
        """Send the kept writes now. If the store still does not answer they go, with
        ``fallback_to_local``, to copies of their runs in the local store, else (or if that
        fails too) to ``<folder or store_dir()>/mlflow-unlogged-<run_id>.json``."""
        if not self.active or not self._pending:
            return
        if unreachable(self.uri, timeout=2.0) is None:
            try:
                self._came_back(self._replay())
                return
            except STORE_ERRORS as err:
                self._went_down(err)
        local = default_tracking_uri()
        if self.fallback_to_local and self.uri != local and self._to_local(local):
            return
        self._write_unlogged(folder or store_dir())

    def _write(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``MlflowClient.<method>`` through the guard (see ``_submit``)."""
        return self._submit(_Call(method, args, kwargs))

    def _submit(self, call: _Call) -> Any:
        """Send ``call`` after the kept ones, or keep it while the store does not answer; the
        store's result, or None (off rank 0, kept, or refused). Never raises for the store."""
        if not self.active:
            return None
        if self._down and not self._due():
            self._pending.append(call)
            return None
        try:
            sent = self._replay()
            result = self._attempt(call)
        except STORE_ERRORS as err:
            self._pending.append(call)
            self._went_down(err)
            return None
        self._came_back(sent)
        return result

    def _due(self) -> bool:
        """Whether a store that stopped answering is worth a try: its cool-down is over and
        (a server) ``/health`` answers within 2 s, so a hung server costs no more than that."""
        if time.monotonic() < self._retry_at:
            return False
        if unreachable(self.uri, timeout=2.0) is None:
            return True
        self._retry_at = time.monotonic() + COOL_DOWN
        return False

    def _replay(self) -> int:
        """Send the kept writes in order; how many. Raises, keeping the rest, if the store
        fails again."""
        sent = 0
        while self._pending:
            self._attempt(self._pending[0])
            self._pending.pop(0)
            sent += 1
        return sent

    def _attempt(
        self, call: _Call, client: MlflowClient | None = None, ids: dict[str, str] | None = None
    ) -> Any:
        """Send ``call``; a call the store refuses is logged and dropped, other errors raise."""
        try:
            return self._send(call, client or self.client, self._ids if ids is None else ids)
        except STORE_ERRORS as err:
            if not _rejected(err):
                raise
            log.warning(
                "MLflow at %s refused %s of run %s (%s): not logged; training continues",
                self.uri,
                call.method,
                call.run_id(),
                _brief(err),
            )
            return None

    def _send(self, call: _Call, client: MlflowClient, ids: dict[str, str]) -> Any:
        """Make ``call`` on ``client``, its ids translated by ``ids``; records the id of a run
        it creates for a stand-in."""
        args, kwargs = self._resolved(call, ids)
        result = getattr(client, call.method)(*args, **kwargs)
        if call.new_run is not None:
            ids[call.new_run] = result.info.run_id
        return result

    @staticmethod
    def _resolved(call: _Call, ids: dict[str, str]) -> tuple[tuple, dict[str, Any]]:
        """The call's arguments with its run (or experiment) id and parent run id mapped."""
        args, kwargs = call.args, call.kwargs
        if args:
            args = (ids.get(args[0], args[0]), *args[1:])
        parent = (kwargs.get("tags") or {}).get("mlflow.parentRunId")
        if call.method == "create_run" and parent in ids:
            kwargs = {**kwargs, "tags": {**kwargs["tags"], "mlflow.parentRunId": ids[parent]}}
        return args, kwargs

    def _went_down(self, err: BaseException) -> None:
        """Leave the store alone for ``COOL_DOWN`` s; say so once per outage."""
        self._retry_at = time.monotonic() + COOL_DOWN
        if self._down:
            return
        self._down = True
        log.warning(
            "MLflow at %s does not answer (%s): training continues; its logging is kept and "
            "sent when it answers again (tried every %d s and at the end of each stage)",
            self.uri,
            _brief(err),
            COOL_DOWN,
        )

    def _came_back(self, sent: int) -> None:
        """Note that the store answers again (after an outage)."""
        if self._down:
            self._down = False
            log.info("MLflow at %s answers again: sent %d kept calls", self.uri, sent)

    def _to_local(self, local: str) -> bool:
        """Log the kept writes to copies of their runs in the local store; whether all went."""
        try:
            if self._local_client is None:
                self._local_client, self._local[self.experiment_id] = open_store(
                    local, self.experiment_name
                )
            while self._pending:
                self._to_local_run(self._pending[0])
                self._pending.pop(0)
        except (ConfigError, *STORE_ERRORS) as err:
            log.warning("could not log to the local store %s either (%s)", local, _brief(err))
            return False
        log.warning(
            "MLflow at %s still does not answer: the kept logging went to the local store %s, "
            "into runs tagged %s=<their id at %s>",
            self.uri,
            local,
            ORIGINAL_RUN_TAG,
            self.uri,
        )
        return True

    def _to_local_run(self, call: _Call) -> None:
        """Send one kept write to the local store, first making the copy of its run."""
        run_id = call.run_id()
        if run_id is not None and run_id not in self._local:
            self._local[run_id] = self._local_run(run_id)
        if call.method != "create_run":  # made by _local_run
            self._attempt(call, self._local_client, self._local)

    def _local_run(self, run_id: str) -> str:
        """A copy of run ``run_id`` in the local store: its name and tags (nested under the
        copy of its parent, if any), tagged with the original id."""
        original = self._ids.get(run_id, run_id)
        name, tags = self._runs.get(run_id, (original, {}))
        tags = {**tags, ORIGINAL_RUN_TAG: original}
        parent = tags.pop("mlflow.parentRunId", None)
        if parent in self._local:
            tags["mlflow.parentRunId"] = self._local[parent]
        experiment_id = self._local[self.experiment_id]
        run = self._local_client.create_run(experiment_id, run_name=name, tags=tags)
        return run.info.run_id

    def _write_unlogged(self, folder: Path) -> None:
        """Write the kept writes to one JSON file per run (method and arguments, in order) and
        say where; a folder that cannot be written gives way to the temp folder."""
        if _unwritable(folder / "mlflow-unlogged.json") is not None:
            folder = Path(tempfile.gettempdir())
        groups: dict[str, list[dict[str, Any]]] = {}
        for call in self._pending:
            run_id = call.run_id()
            key = self._ids.get(run_id, run_id) if run_id else f"experiment-{self.experiment_id}"
            groups.setdefault(key, []).append(self._described(call))
        paths = [str(self._append_unlogged(folder, key, calls)) for key, calls in groups.items()]
        log.warning(
            "MLflow at %s still does not answer: %d calls it did not take are in %s",
            self.uri,
            len(self._pending),
            ", ".join(paths),
        )
        self._pending.clear()

    def _append_unlogged(self, folder: Path, key: str, calls: list[dict[str, Any]]) -> Path:
        """Add ``calls`` to ``<folder>/mlflow-unlogged-<key>.json`` (made if absent)."""
        path = folder / f"mlflow-unlogged-{key}.json"
        record = (
            json.loads(path.read_text())
            if path.is_file()
            else {
                "tracking_uri": self.uri,
                "experiment_name": self.experiment_name,
                "experiment_id": self.experiment_id,
                "run_id": key,
                "calls": [],
            }
        )
        record["calls"] += calls
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1) + "\n")
        return path

    def _described(self, call: _Call) -> dict[str, Any]:
        """A kept write as ``{"method": ..., "args": {name: value}}`` (ids mapped)."""
        args, kwargs = self._resolved(call, self._ids)
        bound = inspect.signature(getattr(MlflowClient, call.method)).bind(None, *args, **kwargs)
        named = {key: value for key, value in bound.arguments.items() if key != "self"}
        return {"method": call.method, "args": _jsonable(named)}


class _GuardedClient:
    """``logger.experiment`` of a tracker's logger: MlflowClient writes go through the tracker
    (kept while the store is down, e.g. callbacks' plot artifacts), reads go to its client."""

    WRITES = frozenset(
        {
            "log_artifact",
            "log_artifacts",
            "log_batch",
            "log_dict",
            "log_figure",
            "log_image",
            "log_metric",
            "log_param",
            "log_text",
            "set_tag",
            "set_terminated",
        }
    )

    def __init__(self, tracker: Tracker) -> None:
        self._tracker = tracker

    def __getattr__(self, name: str) -> Any:
        if name in self.WRITES:
            return functools.partial(self._tracker._write, name)
        return getattr(self._tracker.client, name)


@functools.cache
def _logger_class() -> type[MLFlowLogger]:
    """The logger class of ``Tracker.logger``, made on first use: importing Lightning takes
    seconds, and experiments/compare.py imports this module."""
    from lightning.pytorch.loggers import MLFlowLogger

    class TrackedLogger(MLFlowLogger):
        """An MLFlowLogger of an existing run that writes through a ``Tracker``."""

        def __init__(self, tracker: Tracker, run_id: str | None) -> None:
            super().__init__(
                experiment_name=tracker.experiment_name,
                tracking_uri=tracker.uri,
                run_id=run_id,
                log_model=False,
            )
            self._tracker = tracker
            self._experiment_id = getattr(tracker, "experiment_id", None)

        @property
        def experiment(self) -> _GuardedClient:
            """The tracker's client, guarded; unlike MLFlowLogger's, asks nothing of the store
            on first use (it may be down)."""
            self._initialized = True
            return _GuardedClient(self._tracker)

        def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
            params = vars(params) if isinstance(params, Namespace) else params
            self._tracker.log_params(self._run_id, dict(params))

        def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
            """Numeric metrics, through the tracker (which rounds them)."""
            values = {k: float(v) for k, v in metrics.items() if not isinstance(v, str)}
            self._tracker.log_metrics(self._run_id, values, step or 0)

        def log_image(self, image: Any, key: str, step: int) -> None:
            """A PIL image or numpy array under ``key`` at ``step``."""
            self._tracker.log_image(self._run_id, image, key, step)

        def finalize(self, status: str = "success") -> None:
            """Nothing: the stage ends the run with ``Tracker.finish`` (FINISHED, FAILED or
            KILLED), which Lightning's ``success``/``failed`` cannot say."""

    return TrackedLogger
