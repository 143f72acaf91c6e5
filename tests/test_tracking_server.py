"""Runs logged through a real ``mlflow server`` (started by mlflow/serve.sh) and read back as the
UI shows them; an unreachable server stops a run before training, or falls back to the local store.
"""

from __future__ import annotations

import json
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
from experiments.stages import Invocation, StageResult, run_experiment
from experiments.tracking import default_tracking_uri, unreachable
from tests.test_experiments import EXPERIMENTS, tiny

SERVE = Path(__file__).resolve().parents[1] / "mlflow" / "serve.sh"


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

    assert parent.info.run_name == "hycd seed=0"
    assert parent.data.tags["alignlab.stages"] == "pretrain,refine"
    assert children["pretrain"].info.run_name == "pretrain: clip seed=0"
    assert children["refine"].info.run_name == "refine: clip_refine seed=0"
    assert parent.data.params["method.name"] == "clip_refine"  # the chain's row is filled in
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
    assert all(float(f"{v:.6g}") == v for v in parent.data.metrics.values())  # rounded too
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {
        f"experiment-{refine.hash}.yaml"
    }


def rest(server: str, endpoint: str, body: dict | None = None) -> dict:
    """A call of the server's REST API, as the UI makes it (GET without a body, else POST)."""
    url = f"{server}/api/2.0/mlflow/{endpoint}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def test_two_methods_side_by_side_as_the_ui_run_table_shows_them(server, outputs, capsys):
    """What the runs table of the served UI gets for a CLIP run (lr changed on the command line)
    and an ALIGN run on the same data: one experiment named by the data that opens on the runs
    table, runs named by method and overrides, a description with the command and headline
    results, the dataset input, only the params used, rounded Summary metrics first."""
    common = (f"logger.tracking_uri={server}",)
    clip_overrides = ["optim.lr=3e-4", "seed=1"]
    for yaml_file, changed in (("clip.yaml", clip_overrides), ("align.yaml", [])):
        stages = load_experiment(EXPERIMENTS / yaml_file, tiny(outputs, *common, *changed))
        command = " ".join(["python experiments/run.py", f"experiments/{yaml_file}", *changed])
        run_experiment(
            stages, invocation=Invocation(changed, str(EXPERIMENTS / yaml_file), command)
        )

    experiment = rest(server, "experiments/get-by-name?experiment_name=image_text")["experiment"]
    tags = {t["key"]: t["value"] for t in experiment["tags"]}
    assert tags["mlflow.experimentKind"] == "custom_model_development"  # opens on the runs
    found = rest(
        server,
        "runs/search",
        {"experiment_ids": [experiment["experiment_id"]], "order_by": ["attributes.start_time"]},
    )["runs"]
    assert [r["info"]["run_name"] for r in found] == ["clip optim.lr=3e-4 seed=1", "align seed=0"]
    for run, method in zip(found, ("clip", "align"), strict=True):
        info, data = run["info"], run["data"]
        assert info["status"] == "FINISHED"
        run_tags = {t["key"]: t["value"] for t in data["tags"]}
        assert "mlflow.parentRunId" not in run_tags  # top-level rows, no expander
        assert run_tags["mlflow.source.name"] == f"experiments/{method}.yaml"
        assert run_tags["mlflow.user"]
        note = run_tags["mlflow.note.content"]
        assert note.startswith(f"`python experiments/run.py experiments/{method}.yaml")
        assert ("`optim.lr=3e-4`" in note) == (method == "clip")
        assert "| retrieval/mean_R1 |" in note and "Best checkpoint: epoch 0" in note
        assert "percentages" in note  # the units of R@K

        (dataset,) = run["inputs"]["dataset_inputs"]
        assert dataset["dataset"]["name"] == "image_text-embedded"
        # the splits loaded when the run opens (the test split loads after training)
        assert json.loads(dataset["dataset"]["profile"]) == {"train_items": 48, "val_items": 8}

        params = {p["key"]: p["value"] for p in data["params"]}
        assert params["method.name"] == method
        assert not [k for k in params if k.startswith(("model.video", "model.audio", "logger."))]
        assert "None" not in params.values() and "" not in params.values()

        metrics = {m["key"]: m["value"] for m in data["metrics"]}
        summary = metrics["Summary/retrieval/mean_R1"]
        assert summary == pytest.approx(metrics["test/retrieval/mean_R1"], rel=1e-5)
        assert all(float(f"{v:.6g}") == v for v in metrics.values())  # no float32 noise
        assert min(metrics) == min(k for k in metrics if k.startswith("Summary/"))  # sorts first
        # the plots of every validation epoch (step = epoch) and of the test, as MLflow images
        images = {
            a.path.split("/", 1)[1].split("+timestamp+")[0]
            for a in MlflowClient(server).list_artifacts(info["run_id"], "images")
        }
        plots = ("similarity_matrix", "embedding_pca")
        assert {f"plots~val~{p}+step+0" for p in plots} <= images, images  # the one epoch
        assert {f"plots~test~{p}+step+1" for p in plots} <= images, images  # after 1 epoch
    clip_params = {p["key"]: p["value"] for p in found[0]["data"]["params"]}
    assert clip_params["optim.lr"] == "0.0003" and clip_params["seed"] == "1"
    align_metrics = {m["key"] for m in found[1]["data"]["metrics"]}
    assert "train/loss/mean_form" in align_metrics  # on CLIP's scale beside the summed loss

    # the same two rows through experiments/compare.py: labelled by the params that differ
    chart = outputs / "methods.png"
    capsys.readouterr()
    assert compare(["image_text", "--tracking-uri", server, "--out", str(chart)]) == 0
    out = capsys.readouterr().out
    (clip_row,) = [line for line in out.splitlines() if "method.name=clip" in line]
    (align_row,) = [line for line in out.splitlines() if "method.name=align" in line]
    assert "optim.lr=0.0003" in clip_row and "FINISHED" in clip_row and "FINISHED" in align_row
    assert f"/#/experiments/{experiment['experiment_id']}/runs?workflowType=" in out
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
