"""MLflow bookkeeping: the experiment, parent and stage runs, params and artifacts.

Lightning's ``MLFlowLogger`` logs the metrics of a stage into a run created here (by id), so a
chained experiment shows up as one parent run with a nested run per stage. Under DDP every rank
runs the same script; only global rank 0 talks to MLflow (the others get a silent tracker).
"""

from __future__ import annotations

import modules.env  # noqa: F401  (before mlflow)

import http.client
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from experiments.config import REPO_ROOT, ConfigError, flatten

log = logging.getLogger("alignlab")

STORE_DIR = REPO_ROOT / "mlflow"


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
    server for minutes before it gives up. Other URIs (sqlite, file) are not probed.
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


class Tracker:
    """Creates runs in one MLflow experiment and logs what Lightning's logger does not."""

    def __init__(
        self, tracking_uri: str | None, experiment_name: str, fallback_to_local: bool = False
    ) -> None:
        """Check that the store answers (before any training) and get or create the experiment.

        An unreachable server raises ``ConfigError`` naming the URI, or with
        ``fallback_to_local`` logs a warning and uses the local store instead.
        """
        from lightning.pytorch.utilities.rank_zero import rank_zero_only  # lazy: ~10 s import

        self.uri = tracking_uri or default_tracking_uri()
        self.experiment_name = experiment_name
        self.active = rank_zero_only.rank == 0
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
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(self.uri)
        self.experiment_id = self._experiment(experiment_name)

    def _experiment(self, name: str) -> str:
        """The id of experiment ``name``, created if absent. Runs started together (seeds in
        parallel) may race to create it: the loser finds the winner's."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        # A sqlite store keeps its artifacts beside it (MLflow would use ./mlruns of the
        # current directory); a server decides for itself.
        location = None
        if self.uri.startswith("sqlite:///"):
            db = Path(self.uri.removeprefix("sqlite:///"))
            location = (db.parent / "artifacts" / name).resolve().as_uri()
        try:
            return self.client.create_experiment(name, location)
        except MlflowException:
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def start_run(
        self, name: str, tags: dict[str, str], parent_id: str | None = None
    ) -> str | None:
        """A new run (nested under ``parent_id`` if given); returns its id (None off rank 0)."""
        if not self.active:
            return None
        tags = {**git_state(), "alignlab.command": " ".join(sys.argv), **tags}
        if parent_id is not None:
            tags["mlflow.parentRunId"] = parent_id
        return self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id

    def log_params(self, run_id: str, config: dict[str, Any]) -> None:
        """The flattened config as params (values truncated to MLflow's length limit)."""
        if not self.active:
            return
        params = [
            Param(key, str(value)[:MAX_PARAM_VAL_LENGTH]) for key, value in flatten(config).items()
        ]
        for start in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[start : start + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        if not self.active:
            return
        stamp = int(time.time() * 1000)
        rows = [Metric(key, float(value), stamp, step) for key, value in metrics.items()]
        for start in range(0, len(rows), 500):
            self.client.log_batch(run_id, metrics=rows[start : start + 500])

    def set_tags(self, run_id: str | None, tags: dict[str, str]) -> None:
        if not self.active or run_id is None:
            return
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)

    def set_experiment_tags(self, tags: dict[str, str]) -> None:
        if not self.active:
            return
        for key, value in tags.items():
            self.client.set_experiment_tag(self.experiment_id, key, value)

    def log_inputs(self, run_id: str | None, datasets: list) -> None:
        if not self.active or run_id is None:
            return
        self.client.log_inputs(run_id, datasets)

    def log_artifact(self, run_id: str, path: Path, folder: str | None = None) -> None:
        if not self.active:
            return
        self.client.log_artifact(run_id, str(path), folder)

    def finish(self, run_id: str, status: bool | str) -> None:
        if not self.active:
            return
        if isinstance(status, bool):
            status = "FINISHED" if status else "FAILED"
        self.client.set_terminated(run_id, status)

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
        query = f"tags.`mlflow.parentRunId` = '{parent_id}'"
        return {run.info.run_id for run in self.client.search_runs([self.experiment_id], query)}

    def reopen(self, run_id: str | None) -> None:
        """Mark a run (of a resumed stage) as running again; it keeps its params and history."""
        if not self.active or run_id is None:
            return
        self.client.update_run(run_id, status="RUNNING")

    def run_url(self, run_id: str) -> str:
        """Where to find the run: a UI link for a server, the store and id otherwise."""
        if self.uri.startswith("http"):
            return f"{self.uri}/#/experiments/{self.experiment_id}/runs/{run_id}"
        return f"{self.uri} (experiment {self.experiment_name!r}, run {run_id})"
