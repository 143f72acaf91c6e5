"""experiments/compare.py on a small sqlite store written directly with the MLflow client."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from experiments.compare import main

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def log_run(
    client: MlflowClient,
    experiment_id: str,
    name: str,
    tags: dict[str, str],
    metrics: dict[str, float],
    params: dict[str, str],
    parent: str | None = None,
) -> str:
    """A finished run tagged the way experiments/stages.py tags its runs."""
    if parent is not None:
        tags = {**tags, "mlflow.parentRunId": parent}
    run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
        params=[Param(k, v) for k, v in params.items()],
    )
    client.set_terminated(run_id, "FINISHED")
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Experiment ``cmp``: a clip run, a clip_refine run without one metric, a two-stage chain;
    experiment ``other``: one run."""
    root = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    cmp = client.create_experiment("cmp", (root / "artifacts").as_uri())
    r1 = {"test/retrieval/image_to_text/R1": 20.0, "test/retrieval/text_to_image/R1": 30.0}
    log_run(
        client,
        cmp,
        "clip-image_text-aaaaaaaaaa",
        {"alignlab.method": "clip", "alignlab.data": "image_text"},
        {"test/retrieval/mean_R1": 25.0, **r1, "test/alignment": 1.25},
        {"optim.lr": "0.001"},
    )
    log_run(
        client,
        cmp,
        "clip_refine-image_text-bbbbbbbbbb",
        {"alignlab.method": "clip_refine", "alignlab.data": "image_text"},
        {"test/retrieval/mean_R1": 12.5, "test/alignment": 0.5},
        {"optim.lr": "0.0001"},
    )
    chain = {"alignlab.method": "clip_refine", "alignlab.data": "image_text"}
    parent = log_run(
        client,
        cmp,
        "hycd-image_text-cccccccccc",
        {**chain, "alignlab.stages": "pretrain,refine"},
        {"test/retrieval/mean_R1": 40.0},
        {},
    )
    for stage, method, value in (("pretrain", "clip", 35.0), ("refine", "clip_refine", 40.0)):
        log_run(
            client,
            cmp,
            f"{stage}:{method}-image_text-dddddddddd",
            {**chain, "alignlab.method": method, "alignlab.stage": stage},
            {"test/retrieval/mean_R1": value},
            {"optim.lr": "0.001"},
            parent,
        )
    log_run(client, client.create_experiment("other"), "x", {}, {}, {})
    return uri


def test_table_lists_runs_with_stages_params_and_metrics(store, tmp_path, capsys):
    out = tmp_path / "chart.png"
    assert main(["cmp", "--tracking-uri", store, "--param", "optim.lr", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header == [
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
    rows = [line.split() for line in lines[2:7]]
    assert rows == [
        ["clip-image_text-aaaaaaaaaa", "-", "clip", "image_text", "FINISHED", "0.001"]
        + ["25.000", "20.000", "30.000"],
        ["clip_refine-image_text-bbbbbbbbbb", "-", "clip_refine", "image_text", "FINISHED"]
        + ["0.0001", "12.500", "-", "-"],
        ["hycd-image_text-cccccccccc", "pretrain+refine", "clip_refine", "image_text"]
        + ["FINISHED", "-", "40.000", "-", "-"],
        ["pretrain:clip-image_text-dddddddddd", "pretrain", "clip", "image_text", "FINISHED"]
        + ["0.001", "35.000", "-", "-"],
        ["refine:clip_refine-image_text-dddddddddd", "refine", "clip_refine", "image_text"]
        + ["FINISHED", "0.001", "40.000", "-", "-"],
    ]
    assert lines[5].startswith("  pretrain:") and lines[6].startswith("  refine:")  # nested
    assert lines[-1] == f"chart: {out}"
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_chosen_metrics_and_default_chart_path(store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["cmp", "--tracking-uri", store, "--metric", "test/alignment"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "test/alignment"
    assert lines[2].split()[-1] == "1.250" and lines[4].split()[-1] == "-"
    assert (tmp_path / "compare-cmp.png").read_bytes().startswith(PNG_MAGIC)


def test_unknown_experiment_is_one_line_listing_known_names(store):
    """Also runs the script the documented way: a subprocess, without installing the package."""
    done = subprocess.run(
        [sys.executable, "experiments/compare.py", "nope", "--tracking-uri", store],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"compare: unknown experiment 'nope' in {store}; known: Default, cmp, other"
    ]


def test_missing_store_and_unreachable_server_are_one_line_errors(tmp_path, capsys):
    assert main(["cmp", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert "no MLflow store at" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()
    assert main(["cmp", "--tracking-uri", "http://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "cannot reach MLflow at http://127.0.0.1:1" in err[0]
