"""experiments/benchmark.py on a tiny budget: two methods against one shared baseline, one seed;
the table it writes against the MLflow metrics, regeneration reruns nothing, and deleting one
method's run reruns only that one."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from experiments import benchmark
from experiments.benchmark_table import number, verdict
from tests.processes import run_main

REAL = Path(__file__).resolve().parents[1] / "experiments"
BLOCK = "intro\n<!-- benchmark: tiny -->\nold\n<!-- /benchmark: tiny -->\noutro\n"


def declare(folder: Path, file: str, base: str, name: str, overrides: list[str]) -> None:
    (folder / file).write_text(
        f"base: {REAL / base}\n"
        "benchmark:\n"
        "  section: tiny\n"
        "  budget: image_text\n"
        "  comparisons:\n"
        f"    - name: {name}\n"
        f"      overrides: {overrides}\n"
        "      baseline: {label: CLIP, config: clip.yaml}\n"
        "      metrics: [test/retrieval/mean_R1, test/modality_gap]\n"
        "      claims: [{metric: test/retrieval/mean_R1, direction: higher}]\n"
    )


@pytest.fixture
def setup(tmp_path, monkeypatch):
    folder = tmp_path / "experiments"
    folder.mkdir()
    declare(folder, "a.yaml", "align.yaml", "align", [])
    declare(folder, "b.yaml", "clip.yaml", "smoothed", ["method.label_smoothing=0.1"])
    docs = tmp_path / "methods.md"
    docs.write_text(BLOCK)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tiny = [
        "data.num_train=48",
        "data.num_val=8",
        "data.num_test=8",
        "data.batch_size=16",
        "data.eval_batch_size=32",
        "trainer.max_epochs=1",  # after the budget's 12: the last override wins
        "trainer.limit_train_batches=2",
        "trainer.enable_progress_bar=false",
        f"output_dir={tmp_path / 'outputs'}",
        f"logger.tracking_uri={store}",
    ]
    ran: list[list[str]] = []

    def execute(argv: list[str]) -> None:
        ran.append(argv)
        assert run_main(argv)[0] == 0

    monkeypatch.setattr(benchmark, "execute", execute)
    monkeypatch.setattr(benchmark, "PLOTS", tmp_path / "plots")
    argv = ["--seeds", "0", "--docs", str(docs), "--experiments", str(folder)]
    for override in tiny:
        argv += ["--set", override]
    return argv, docs, ran, MlflowClient(store)


def tagged_runs(client: MlflowClient) -> dict[str, object]:
    """The benchmark runs by arm: align, smoothed or clip (read from their params)."""
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, f"tags.`{benchmark.TAG}` = 'true'")
    out = {}
    for run in runs:
        params = run.data.params
        if params["method.name"] == "align":
            out["align"] = run
        else:
            out["smoothed" if float(params["method.label_smoothing"]) else "clip"] = run
    return out


def table_cells(docs: Path) -> dict[tuple[str, str], list[str]]:
    lines = [ln for ln in docs.read_text().splitlines() if ln.startswith("| `")]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    return {(c[0].strip("`"), c[4].strip("`")): c for c in cells}


def test_the_table_is_read_from_mlflow_and_regenerates_without_rerunning(setup):
    argv, docs, ran, client = setup
    assert benchmark.main(argv) == 0
    assert len(ran) == 3  # align, smoothed, and the clip baseline they share
    runs = tagged_runs(client)
    assert sorted(runs) == ["align", "clip", "smoothed"]
    cells = table_cells(docs)
    assert len(cells) == 4 and docs.read_text().startswith("intro\n")
    for name in ("align", "smoothed"):
        for metric in ("test/retrieval/mean_R1", "test/modality_gap"):
            row = cells[(name, metric.removeprefix("test/"))]
            method, base = runs[name].data.metrics[metric], runs["clip"].data.metrics[metric]
            assert row[5:8] == [number(method), number(base), number(method - base)]
        assert cells[(name, "retrieval/mean_R1")][9] == "one seed: no verdict"
    first = docs.read_text()

    assert benchmark.main(argv) == 0
    assert len(ran) == 3 and docs.read_text() == first

    client.delete_run(runs["align"].info.run_id)
    assert benchmark.main(argv) == 0
    assert len(ran) == 4 and ran[-1][0].endswith("a.yaml")


def test_read_only_fails_in_one_line_when_a_run_is_missing(setup, capsys):
    argv, docs, ran, _ = setup
    assert benchmark.main([*argv, "--no-run", "align"]) == 2
    assert ran == [] and docs.read_text() == BLOCK
    assert capsys.readouterr().err.startswith("benchmark error: no benchmark run of ")


def test_an_unknown_comparison_is_named_with_the_declared_ones(setup, capsys):
    argv, *_ = setup
    assert benchmark.main([*argv, "nope"]) == 2
    assert "no comparison nope (declared: align, smoothed)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("differences", "direction", "want"),
    [
        ([1.0, 2.0, 1.5], "higher", "yes"),
        ([-1.0, -2.0, -1.5], "lower", "yes"),
        ([-1.0, -2.0, -1.5], "higher", "no"),
        ([0.1, 3.0, 0.1], "higher", "no measurable effect"),  # every seed, but mean < std
        ([1.0, -0.1, 2.0], "higher", "no measurable effect"),  # one seed the other way
        ([2.0], "higher", "one seed: no verdict"),
    ],
)
def test_the_verdict_rule(differences, direction, want):
    assert verdict(differences, direction) == want
