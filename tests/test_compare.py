"""experiments/compare.py on a small sqlite store written directly with the MLflow client."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from itertools import count
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

import experiments.compare as compare
from experiments.compare import main, serve_hint, ui_lines

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUERY = "?workflowType=machine_learning"
CLOCK = count(1_700_000_000_000, 1000)  # start times: runs list in the order they are made


def log_run(
    client: MlflowClient,
    experiment_id: str,
    name: str,
    tags: dict[str, str] | None = None,
    metrics: dict[str, float] | None = None,
    params: dict[str, str] | None = None,
    parent: str | None = None,
    status: str | None = "FINISHED",
) -> str:
    """A run tagged the way experiments/stages.py tags its runs; ``status`` None leaves it
    RUNNING."""
    tags = dict(tags or {})
    if parent is not None:
        tags["mlflow.parentRunId"] = parent
    run = client.create_run(experiment_id, start_time=next(CLOCK), tags=tags, run_name=name)
    run_id = run.info.run_id
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, 0, 0) for k, v in (metrics or {}).items()],
        params=[Param(k, v) for k, v in (params or {}).items()],
    )
    if status is not None:
        client.set_terminated(run_id, status)
    return run_id


def config(name: str, method: str, lr: str) -> dict[str, str]:
    """The params a run of YAML ``name`` logs (a few of them)."""
    return {"name": name, "method.name": method, "optim.lr": lr, "seed": "0"}


def image_text(client: MlflowClient, experiment_id: str) -> None:
    """A clip run, a failed align run, and a hycd chain (pretrain: clip, refine: clip_refine)
    whose parent has the last stage's params and test metrics."""
    tags = {"alignlab.data": "image_text"}
    log_run(
        client,
        experiment_id,
        "clip seed=0",
        {**tags, "alignlab.method": "clip"},
        {
            "test/retrieval/mean_R1": 25.0,
            "test/retrieval/image_to_text/R1": 20.0,
            "test/retrieval/text_to_image/R1": 30.0,
            "test/alignment": 1.25,
        },
        config("clip", "clip", "0.001"),
    )
    log_run(
        client,
        experiment_id,
        "align optim.lr=1e-4 seed=0",
        {**tags, "alignlab.method": "align"},
        {"test/retrieval/mean_R1": 12.3456, "test/alignment": 0.000123456},
        config("align", "align", "0.0001"),
        status="FAILED",
    )
    chain = {**tags, "alignlab.method": "clip_refine"}
    parent = log_run(
        client,
        experiment_id,
        "hycd seed=0",
        {**chain, "alignlab.stages": "pretrain,refine"},
        {"test/retrieval/mean_R1": 40.0, "test/alignment": 123456.7},
        config("hycd", "clip_refine", "0.001"),
    )
    for stage, method, metrics in (
        ("pretrain", "clip", {"test/retrieval/mean_R1": 35.0}),
        ("refine", "clip_refine", {"test/retrieval/mean_R1": 40.0, "val/retrieval/mean_R1": 41.0}),
    ):
        log_run(
            client,
            experiment_id,
            f"{stage}: {method} seed=0",
            {**chain, "alignlab.method": method, "alignlab.stage": stage},
            metrics,
            config("hycd", method, "0.001"),
            parent,
        )


def dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def statuses(client: MlflowClient, experiment_id: str) -> None:
    """One run per status; all with the same params, so each is labelled by its name."""
    here = socket.gethostname()
    for name, status, tags in (
        ("finished", "FINISHED", {}),
        ("failed", "FAILED", {}),
        ("killed", "KILLED", {}),
        ("alive", None, {"alignlab.host": here, "alignlab.pid": str(os.getpid())}),
        ("dead", None, {"alignlab.host": here, "alignlab.pid": str(dead_pid())}),
        ("elsewhere", None, {"alignlab.host": f"not-{here}", "alignlab.pid": "1"}),
        ("untagged", None, {}),
    ):
        log_run(client, experiment_id, name, tags, {}, {"seed": "0"}, status=status)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Experiments ``image_text`` (see image_text), ``video_text`` (one clip run), ``status``
    (see statuses) and ``empty`` in ``<tmp>/mlflow.db``."""
    root = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    image_text(client, client.create_experiment("image_text", (root / "a").as_uri()))
    log_run(
        client,
        client.create_experiment("video_text", (root / "b").as_uri()),
        "clip seed=0",
        {"alignlab.method": "clip", "alignlab.data": "video_text"},
        {"test/retrieval/mean_R1": 50.0},
        config("clip", "clip", "0.001"),
    )
    statuses(client, client.create_experiment("status", (root / "c").as_uri()))
    client.create_experiment("empty", (root / "d").as_uri())
    return uri


def cells(line: str) -> list[str]:
    """A table line's cells (columns are 2+ spaces apart; labels have single spaces)."""
    return re.split(r"\s{2,}", line.strip())


def experiment_id(uri: str, name: str) -> str:
    return MlflowClient(uri).get_experiment_by_name(name).experiment_id


@pytest.fixture
def charted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list, str, Path]]:
    """The arguments of every bar_chart call (no chart drawn)."""
    calls: list[tuple[list, str, Path]] = []
    monkeypatch.setattr(compare, "bar_chart", lambda *args: calls.append(args))
    return calls


def test_runs_are_labelled_by_differing_params_and_a_chain_is_one_row(store, tmp_path, capsys):
    out = tmp_path / "chart.png"
    args = ["image_text", "--tracking-uri", store, "--param", "optim.lr", "--out", str(out)]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert cells(lines[0]) == [
        "run",
        "stage",
        "method",
        "data",
        "status",
        "optim.lr",
        "test/retrieval/mean_R1",
        "test/retrieval/image_to_text/R1",
        "test/retrieval/text_to_image/R1",
    ]
    assert [cells(line) for line in lines[2:6]] == [
        ["method.name=clip optim.lr=0.001", "-", "clip", "image_text", "FINISHED", "0.001"]
        + ["25", "20", "30"],
        ["method.name=align optim.lr=0.0001", "-", "align", "image_text", "FAILED", "0.0001"]
        + ["12.35", "-", "-"],
        ["method.name=clip_refine name=hycd optim.lr=0.001", "pretrain+refine", "clip_refine"]
        + ["image_text", "FINISHED", "0.001", "40", "-", "-"],
        ["method.name=clip name=hycd optim.lr=0.001", "pretrain", "clip", "image_text"]
        + ["FINISHED", "0.001", "35", "-", "-"],
    ]
    assert lines[5].startswith("  method.name=clip name=hycd")  # the stage, indented
    assert lines[6] == ""  # no row of the last stage: its parent stands for it
    assert lines[-1] == f"chart: {out}"
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_chain_parent_has_its_last_stage_metrics_and_one_bar(store, charted, capsys):
    assert main(["image_text", "--tracking-uri", store, "--metric", "val/retrieval/mean_R1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [cells(line)[-1] for line in lines[2:6]] == ["-", "-", "41", "-"]
    assert main(["image_text", "--tracking-uri", store]) == 0
    [(bars, title, _)] = charted[1:]
    assert title == "image_text: test/retrieval/mean_R1"
    assert bars == [
        ("method.name=clip optim.lr=0.001", "image_text", 25.0),
        ("method.name=align optim.lr=0.0001", "image_text", 12.3456),
        ("pretrain+refine: method.name=clip_refine name=hycd optim.lr=0.001", "image_text", 40.0),
        ("pretrain: method.name=clip name=hycd optim.lr=0.001", "image_text", 35.0),
    ]


def test_metrics_have_four_significant_digits(store, charted, capsys):
    assert main(["image_text", "--tracking-uri", store, "--metric", "test/alignment"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [cells(line)[-1] for line in lines[2:6]] == ["1.25", "0.0001235", "1.235e+05", "-"]


def test_several_experiments_get_a_column_and_a_chart_under_outputs(
    store, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(compare, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    assert main(["image_text", "video_text", "--tracking-uri", store]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert cells(lines[0])[:2] == ["experiment", "run"]
    assert [cells(line)[:2] for line in (lines[2], lines[6])] == [
        ["image_text", "method.name=clip optim.lr=0.001"],
        ["video_text", "method.name=clip optim.lr=0.001"],
    ]
    assert cells(lines[6])[6] == "50"  # test/retrieval/mean_R1
    ids = {name: experiment_id(store, name) for name in ("image_text", "video_text")}
    assert lines[-3:-1] == [
        f"  {name}: http://127.0.0.1:5000/#/experiments/{i}/runs{QUERY}" for name, i in ids.items()
    ]
    out = tmp_path / "repo" / "outputs" / "compare" / "compare-image_text+video_text.png"
    assert lines[-1] == f"chart: {out}"
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]  # nothing in the cwd


def test_status_of_running_runs_checks_their_process(store, capsys):
    assert main(["status", "--tracking-uri", store]) == 0
    captured = capsys.readouterr()
    rows = [cells(line) for line in captured.out.splitlines()[2:9]]
    assert [(row[0], row[4]) for row in rows] == [  # nothing differs: labelled by run name
        ("finished", "FINISHED"),
        ("failed", "FAILED"),
        ("killed", "KILLED"),
        ("alive", "RUNNING"),
        ("dead", "DEAD"),
        ("elsewhere", "RUNNING?"),
        ("untagged", "RUNNING?"),
    ]
    assert "no run has metric 'test/retrieval/mean_R1': no chart written" in captured.err


def test_a_local_store_prints_how_to_serve_it_and_its_link(store, charted, capsys):
    assert main(["status", "--tracking-uri", store]) == 0
    lines = capsys.readouterr().out.splitlines()
    folder = Path(store.removeprefix("sqlite:///")).parent
    assert lines[-2:] == [
        f"MLflow UI (serve the store first: ALIGNLAB_MLFLOW_DIR={folder} bash mlflow/serve.sh):",
        f"  status: http://127.0.0.1:5000/#/experiments/{experiment_id(store, 'status')}/runs"
        + QUERY,
    ]


def test_serve_hints_and_server_links(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_MLFLOW_DIR", str(tmp_path))
    assert serve_hint(f"sqlite:///{tmp_path / 'mlflow.db'}") == "bash mlflow/serve.sh"
    other = f"sqlite:///{tmp_path / 'runs.db'}"
    assert serve_hint(other) == f"mlflow ui --backend-store-uri {other}"
    assert ui_lines("https://mlflow.example/", {"image_text": "7"}) == [
        "MLflow UI:",
        f"  image_text: https://mlflow.example/#/experiments/7/runs{QUERY}",
    ]


def test_an_experiment_without_runs_is_named(store, charted, capsys):
    assert main(["empty", "--tracking-uri", store]) == 1
    assert capsys.readouterr().err == "experiment 'empty' has no runs\n"
    assert main(["empty", "video_text", "--tracking-uri", store]) == 0
    captured = capsys.readouterr()
    assert captured.err == "experiment 'empty' has no runs\n"
    assert [cells(line)[0] for line in captured.out.splitlines()[2:3]] == ["video_text"]


def test_unknown_experiment_is_one_line_listing_known_names(store):
    """Also runs the script the documented way: a subprocess, without installing the package."""
    done = subprocess.run(
        [sys.executable, "experiments/compare.py", "image_text", "nope", "--tracking-uri", store],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"compare: unknown experiment 'nope' in {store}; known: Default, empty, image_text, "
        "status, video_text"
    ]


def test_missing_store_and_unreachable_server_are_one_line_errors(tmp_path, capsys):
    assert main(["cmp", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert "no MLflow store at" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()
    assert main(["cmp", "--tracking-uri", "http://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "cannot reach MLflow at http://127.0.0.1:1" in err[0]
