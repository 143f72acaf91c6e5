"""Runs logged through a real ``mlflow server`` (started by mlflow/serve.sh) and read back as the
UI shows them; an unreachable server stops a run before training, or falls back to the local store.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from experiments.compare import main as compare
from experiments.config import ConfigError, load_experiment
from experiments.stages import StageResult, run_experiment
from experiments.tracking import default_tracking_uri, unreachable
from tests.test_experiments import EXPERIMENTS, tiny

SERVE = Path(__file__).resolve().parents[1] / "mlflow" / "serve.sh"
HASHED_NAME = r"[a-z_]+-image_text-[0-9a-f]{10}"


def free_port() -> int:
    """A port nothing listens on (the OS picks a free one; it stays free once released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """End the server and every process it started (its own process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=20)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``bash mlflow/serve.sh PORT`` on a store in a temp folder; its URI once /health answers.

    One server for the module: it takes ~25 s to start.
    """
    store = tmp_path_factory.mktemp("server-store")
    port = free_port()
    env = {
        **os.environ,
        "ALIGNLAB_MLFLOW_DIR": str(store),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log_file = store / "server.log"
    with log_file.open("w") as log:
        proc = subprocess.Popen(
            ["bash", str(SERVE), str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while unreachable(uri, timeout=2) is not None:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not come up:\n{log_file.read_text()[-3000:]}")
            time.sleep(0.5)
        assert (store / "mlflow.db").is_file()  # serve.sh serves the folder it was pointed at
        yield uri
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-runs")


@pytest.fixture(scope="module")
def chain(server: str, outputs: Path) -> list[StageResult]:
    """The two-stage hycd experiment, logged through the server."""
    overrides = tiny(outputs, f"logger.tracking_uri={server}", "logger.experiment_name=chain")
    return run_experiment(load_experiment(EXPERIMENTS / "hycd.yaml", overrides))


def ui_artifact(server: str, run_id: str, path: str) -> bytes:
    """An artifact the way the UI's artifact view fetches it (the server's REST endpoint)."""
    query = urllib.parse.urlencode({"path": path, "run_uuid": run_id})
    with urllib.request.urlopen(f"{server}/get-artifact?{query}", timeout=30) as answer:
        return answer.read()


def test_chain_reads_back_through_the_server(server, chain):
    pretrain, refine = chain
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("chain")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 3
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.data.tags["alignlab.stage"]: r for r in runs if r is not parent}
    assert sorted(children) == ["pretrain", "refine"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children.values()} == {parent.info.run_id}
    assert children["pretrain"].info.run_id == pretrain.run_id
    assert children["refine"].info.run_id == refine.run_id

    assert re.fullmatch(rf"hycd-image_text-{refine.hash}", parent.info.run_name)
    assert parent.data.tags["alignlab.stages"] == "pretrain,refine"
    assert children["pretrain"].info.run_name == f"pretrain:clip-image_text-{pretrain.hash}"
    assert children["refine"].info.run_name == f"refine:clip_refine-image_text-{refine.hash}"
    for run in runs:
        tags = run.data.tags
        assert run.info.status == "FINISHED"
        assert tags["alignlab.data"] == "image_text"
        assert re.fullmatch(r"[0-9a-f]{40}", tags["mlflow.source.git.commit"])
        assert tags["alignlab.git_dirty"] in ("true", "false")
        assert tags["alignlab.command"] == " ".join(sys.argv)
    assert children["pretrain"].data.tags["alignlab.method"] == "clip"
    assert children["refine"].data.tags["alignlab.method"] == "clip_refine"
    assert children["refine"].data.tags["alignlab.config_hash"] == refine.hash

    params = children["refine"].data.params
    assert params["optim.lr"] == "0.0001" and params["method.name"] == "clip_refine"
    assert params["method.alpha"] == "0.5" and params["data.num_train"] == "48"
    assert children["pretrain"].data.params["optim.lr"] == "0.001"

    for stage, result in (("pretrain", pretrain), ("refine", refine)):
        run = children[stage]
        metrics = run.data.metrics
        assert metrics["test/retrieval/mean_R1"] == pytest.approx(
            result.metrics["test/retrieval/mean_R1"]
        )
        assert "test/retrieval/image_to_text/R1" in metrics and "val/alignment" in metrics
        history = client.get_metric_history(run.info.run_id, "train/loss")
        assert len(history) == 2  # limit_train_batches=2, logged every step
        assert history[0].step < history[1].step
        listed = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "config.yaml" in listed
        plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        assert {"plots/similarity_matrix.png", "plots/embedding_pca.png"} <= plots
        assert ui_artifact(server, run.info.run_id, "plots/embedding_pca.png")[:4] == b"\x89PNG"
    assert "name: clip_refine" in ui_artifact(server, refine.run_id, "config.yaml").decode()
    assert parent.data.metrics["test/retrieval/mean_R1"] == pytest.approx(
        refine.metrics["test/retrieval/mean_R1"]
    )
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {
        f"experiment-{refine.hash}.yaml"
    }


def test_two_methods_side_by_side_as_the_ui_run_table_shows_them(server, chain, outputs, capsys):
    """What the experiment page lists for a CLIP run and a CLIP-Refine run (from the chain's
    pre-trained checkpoint) logged to one experiment: two top-level runs, each named
    ``<method>-<data>-<hash>``, the method tag and params telling them apart, and the same
    metric columns filled for both."""
    checkpoint = str(chain[0].checkpoint)
    common = ("logger.experiment_name=methods", f"logger.tracking_uri={server}")
    run_experiment(load_experiment(EXPERIMENTS / "clip.yaml", tiny(outputs, *common)))
    refine = tiny(
        outputs,
        *common,
        "method={name: clip_refine, loss_weights: {clip: 1.0, rafa: 1.0, hycd: 1.0}}",
        f"init_from={checkpoint}",
        f"teacher_from={checkpoint}",
    )
    run_experiment(load_experiment(EXPERIMENTS / "clip.yaml", refine))

    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("methods")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert len(runs) == 2
    clip, clip_refine = runs
    for run, method in ((clip, "clip"), (clip_refine, "clip_refine")):
        assert "mlflow.parentRunId" not in run.data.tags  # top-level rows, no expander
        assert "alignlab.stage" not in run.data.tags
        assert re.fullmatch(rf"{method}-image_text-[0-9a-f]{{10}}", run.info.run_name)
        assert run.data.tags["alignlab.method"] == method
        assert run.data.params["method.name"] == method
        assert run.info.status == "FINISHED"
    assert clip.info.run_name != clip_refine.info.run_name
    assert all(re.fullmatch(HASHED_NAME, r.info.run_name) for r in runs)
    assert clip.data.params["init_from"] == "None"
    assert clip_refine.data.params["init_from"] == checkpoint
    shared = set(clip.data.metrics) & set(clip_refine.data.metrics)
    assert {
        "train/loss",
        "train/logit_scale",
        "val/retrieval/mean_R1",
        "test/retrieval/mean_R1",
        "test/retrieval/image_to_text/R1",
        "test/retrieval/text_to_image/R1",
        "test/alignment",
        "test/modality_gap",
        "test/zero_shot/shape/accuracy",
    } <= shared
    assert {"train/loss/rafa", "train/loss/hycd"} <= set(clip_refine.data.metrics) - shared

    # the same two rows through experiments/compare.py, against the server
    chart = outputs / "methods.png"
    capsys.readouterr()  # MLflow's own "View run ... at: ..." lines from the runs above
    assert compare(["methods", "--tracking-uri", server, "--out", str(chart)]) == 0
    rows = capsys.readouterr().out.splitlines()[2:4]
    assert [row.split()[:3] for row in rows] == [
        [clip.info.run_name, "-", "clip"],
        [clip_refine.info.run_name, "-", "clip_refine"],
    ]
    assert chart.read_bytes()[:4] == b"\x89PNG"


def test_unreachable_server_stops_the_run_before_training(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    stages = load_experiment(
        EXPERIMENTS / "clip.yaml", tiny(tmp_path, f"logger.tracking_uri={uri}")
    )
    with pytest.raises(ConfigError) as caught:
        run_experiment(stages)
    message = str(caught.value)
    assert message.startswith(f"logger.tracking_uri: cannot reach MLflow at {uri} (")
    assert "logger.fallback_to_local=true" in message and "\n" not in message
    assert not (tmp_path / "outputs").exists()  # nothing trained or written


def test_unreachable_server_falls_back_to_the_local_store(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ALIGNLAB_MLFLOW_DIR", str(tmp_path / "local"))
    uri = f"http://127.0.0.1:{free_port()}"
    overrides = tiny(
        tmp_path,
        f"logger.tracking_uri={uri}",
        "logger.fallback_to_local=true",
        "logger.experiment_name=offline",
    )
    with caplog.at_level(logging.WARNING, logger="alignlab"):
        (result,) = run_experiment(load_experiment(EXPERIMENTS / "clip.yaml", overrides))
    local = default_tracking_uri()
    assert local == f"sqlite:///{tmp_path / 'local' / 'mlflow.db'}"
    assert f"MLflow at {uri} is unreachable" in caplog.text
    assert f"falling back to the local store {local}" in caplog.text

    client = MlflowClient(local)
    (run,) = client.search_runs([client.get_experiment_by_name("offline").experiment_id])
    assert run.info.run_id == result.run_id and run.info.status == "FINISHED"
    assert "test/retrieval/mean_R1" in run.data.metrics  # Lightning's logger followed too
    assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
