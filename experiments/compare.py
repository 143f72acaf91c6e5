"""Compare the runs of MLflow experiments: a table of params and metrics, and a bar chart.

    python experiments/compare.py EXPERIMENT [EXPERIMENT ...] [--metric M ...] [--param P ...]
                                  [--tracking-uri URI] [--out chart.png]

Reads the project's local store (mlflow/mlflow.db, or $ALIGNLAB_MLFLOW_DIR) unless
--tracking-uri names another, e.g. http://127.0.0.1:5000 for a server (bash mlflow/serve.sh).
One row per run, oldest first, experiment by experiment (an ``experiment`` column when several
are given). A run is labelled by the params that differ between the compared runs
(``method.name=align optim.lr=0.001``), or by its name when none of its params differ.

A chain is one row: its parent run, with the chain's stages (``pretrain+refine``) and the last
stage's params and metrics (the parent's own where it has them); the last stage has no row of
its own, the earlier stages follow the parent, indented, with their stage.

Status is MLflow's (FINISHED, FAILED, KILLED); a RUNNING run started on this host (tags
``alignlab.host``, ``alignlab.pid``) is RUNNING while its process lives and DEAD (crashed
without marking its run) once it is gone; on another host or without those tags, RUNNING?.

Metrics default to test/retrieval/mean_R1 and every test/.../R1 the runs have, printed to 4
significant digits; a run without a metric or param shows '-'. The chart (default
outputs/compare/compare-<names>.png of the checkout) has one bar per row with the first metric,
one colour per experiment. A link to each experiment's runs table in the MLflow UI follows the
table. Errors are one line, exit 2.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing

import modules.env  # noqa: E402, F401  (before mlflow)

from mlflow.entities import Run  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from experiments.config import REPO_ROOT  # noqa: E402
from experiments.run_page import ui_link  # noqa: E402
from experiments.tracking import default_tracking_uri, unreachable  # noqa: E402

HEADLINE = "test/retrieval/mean_R1"
MISSING = "-"
PARENT = "mlflow.parentRunId"


class CompareError(Exception):
    """A problem reported as one line with exit code 2."""


@dataclass
class Row:
    """One listed run: a chain's parent carries its last stage's params and metrics."""

    experiment: str
    run: Run
    nested: bool
    params: dict[str, str]
    metrics: dict[str, float]


def open_store(uri: str) -> MlflowClient:
    """A client on ``uri``, once the store exists (sqlite) or the server answers."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise CompareError(f"no MLflow store at {uri} (no run has logged there yet)")
    problem = unreachable(uri)
    if problem is not None:
        raise CompareError(f"--tracking-uri: cannot reach MLflow at {uri} ({problem})")
    return MlflowClient(uri)


def experiment_ids(client: MlflowClient, uri: str, names: list[str]) -> dict[str, str]:
    """The id of each named experiment, in the order given."""
    ids = {}
    for name in names:
        found = client.get_experiment_by_name(name)
        if found is None:
            known = sorted(e.name for e in client.search_experiments())
            raise CompareError(
                f"unknown experiment {name!r} in {uri}; known: {', '.join(known) or 'none'}"
            )
        ids[name] = found.experiment_id
    return ids


def search_all(client: MlflowClient, experiment_id: str) -> list[Run]:
    """Every active run of the experiment, oldest first."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], order_by=["attributes.start_time ASC"], page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def last_stage(parent: Run, children: list[Run]) -> Run | None:
    """The run of a chain's last stage (named last in ``alignlab.stages``), if it has one."""
    stages = parent.data.tags.get("alignlab.stages", "")
    if not stages:
        return None
    name = stages.split(",")[-1]
    found = [run for run in children if run.data.tags.get("alignlab.stage") == name]
    return found[-1] if found else None


def rows_of(experiment: str, runs: list[Run]) -> list[Row]:
    """Top-level runs, each followed by its stages; a chain's last stage merged into its parent."""
    ids = {run.info.run_id for run in runs}
    children: dict[str, list[Run]] = {}
    for run in runs:
        if run.data.tags.get(PARENT) in ids:
            children.setdefault(run.data.tags[PARENT], []).append(run)
    rows = []
    for run in runs:
        if run.data.tags.get(PARENT) in ids:
            continue
        stages = children.get(run.info.run_id, [])
        last = last_stage(run, stages)
        params, metrics = dict(run.data.params), dict(run.data.metrics)
        if last is not None:
            params, metrics = {**last.data.params, **params}, {**last.data.metrics, **metrics}
        rows.append(Row(experiment, run, False, params, metrics))
        rows += [
            Row(experiment, s, True, dict(s.data.params), dict(s.data.metrics))
            for s in stages
            if s is not last
        ]
    return rows


def differing(rows: list[Row]) -> list[str]:
    """Params, sorted, with more than one value among the rows that have them."""
    values: dict[str, set[str]] = {}
    for row in rows:
        for key, value in row.params.items():
            values.setdefault(key, set()).add(value)
    return sorted(key for key, seen in values.items() if len(seen) > 1)


def repeats_method(key: str, row: Row, keys: list[str]) -> bool:
    """Whether ``key`` is the YAML's ``name`` and says what the row's (differing)
    ``method.name`` says."""
    return (
        key == "name" and "method.name" in keys and row.params[key] == row.params.get("method.name")
    )


def labels(rows: list[Row]) -> list[str]:
    """Each row's differing params as ``key=value ...`` (``name`` not where it repeats
    ``method.name``), or its run's name if none of its params differ."""
    keys = differing(rows)
    out = []
    for row in rows:
        shown = [
            f"{k}={row.params[k]}"
            for k in keys
            if k in row.params and not repeats_method(k, row, keys)
        ]
        out.append(" ".join(shown) or row.run.info.run_name or row.run.info.run_id)
    return out


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        pass
    return True


def status_of(run: Run) -> str:
    """MLflow's status; a RUNNING run's process checked when it ran on this host."""
    status = run.info.status
    if status != "RUNNING":
        return status
    tags = run.data.tags
    pid = tags.get("alignlab.pid", "")
    if tags.get("alignlab.host") != socket.gethostname() or not pid.isdigit() or int(pid) < 1:
        return "RUNNING?"
    return "RUNNING" if pid_alive(int(pid)) else "DEAD"


def stage_of(run: Run) -> str:
    """A stage run's stage, a chain parent's stages (``pretrain+refine``), or '-'."""
    tags = run.data.tags
    if "alignlab.stage" in tags:
        return tags["alignlab.stage"]
    return tags.get("alignlab.stages", MISSING).replace(",", "+") or MISSING


def number(value: float) -> str:
    """A metric to 4 significant digits."""
    return f"{value:.4g}"


def default_metrics(rows: list[Row]) -> list[str]:
    """``test/retrieval/mean_R1`` first, then every other ``test/.../R1`` any row has."""
    present = {key for row in rows for key in row.metrics}
    r1 = sorted(k for k in present if k.startswith("test/") and k.endswith("R1") and k != HEADLINE)
    return [HEADLINE, *r1]


def table(
    rows: list[Row], row_labels: list[str], params: list[str], metrics: list[str], several: bool
) -> tuple[list[str], list[list[str]]]:
    """The header and one row of strings per run (an ``experiment`` column first if
    ``several``)."""
    header = ["run", "stage", "method", "data", "status", *params, *metrics]
    cells = []
    for row, label in zip(rows, row_labels, strict=True):
        tags = row.run.data.tags
        cells.append(
            [
                *([row.experiment] if several else []),
                f"  {label}" if row.nested else label,
                stage_of(row.run),
                tags.get("alignlab.method", MISSING),
                tags.get("alignlab.data", MISSING),
                status_of(row.run),
                *(row.params.get(p, MISSING) for p in params),
                *(number(row.metrics[m]) if m in row.metrics else MISSING for m in metrics),
            ]
        )
    return (["experiment", *header] if several else header), cells


def render(header: list[str], rows: list[list[str]], numeric_from: int) -> str:
    """A plain-text table; columns from ``numeric_from`` on are right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i >= numeric_from else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def bar_chart(bars: list[tuple[str, str, float]], title: str, out: Path) -> None:
    """Horizontal bars (label, experiment, value), first at the top, one colour per experiment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(experiment for _, experiment, _ in bars))
    colours = [f"C{names.index(experiment) % 10}" for _, experiment, _ in bars]
    longest = max(len(label) for label, *_ in bars)
    fig, ax = plt.subplots(figsize=(5 + 0.08 * longest, 1.2 + 0.4 * len(bars)))
    ax.barh(range(len(bars)), [value for *_, value in bars], color=colours)
    ax.set_yticks(range(len(bars)), [label for label, *_ in bars])
    ax.invert_yaxis()
    ax.bar_label(ax.containers[0], fmt="%.4g", padding=3)
    if len(names) > 1:
        handles = [plt.Rectangle((0, 0), 1, 1, color=f"C{i % 10}") for i in range(len(names))]
        ax.legend(handles, names, loc="best", fontsize="small")
    ax.set_title(title)
    ax.margins(x=0.15)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def chart_bars(rows: list[Row], row_labels: list[str], metric: str) -> list[tuple[str, str, float]]:
    """(label, experiment, value) of each row with ``metric``; a stage's label starts with it."""
    bars = []
    for row, label in zip(rows, row_labels, strict=True):
        if metric in row.metrics:
            stage = stage_of(row.run)
            text = label if stage == MISSING else f"{stage}: {label}"
            bars.append((text, row.experiment, row.metrics[metric]))
    return bars


def default_out(names: list[str]) -> Path:
    """``outputs/compare/compare-<names>.png`` of the checkout (names joined by '+')."""
    safe = re.sub(r"[^A-Za-z0-9_.+-]+", "_", "+".join(names))
    return REPO_ROOT / "outputs" / "compare" / f"compare-{safe}.png"


def serve_hint(uri: str) -> str:
    """The command that serves a local store on the UI address ``ui_link`` uses."""
    if uri == default_tracking_uri():
        return "bash mlflow/serve.sh"
    db = Path(uri.removeprefix("sqlite:///"))
    if uri.startswith("sqlite:///") and db.name == "mlflow.db":
        return f"ALIGNLAB_MLFLOW_DIR={shlex.quote(str(db.parent))} bash mlflow/serve.sh"
    return f"mlflow ui --backend-store-uri {shlex.quote(uri)}"


def ui_lines(uri: str, ids: dict[str, str]) -> list[str]:
    """Where each experiment's runs table is in the MLflow UI (and how to serve a local store)."""
    remote = uri.startswith(("http://", "https://"))
    head = "MLflow UI:" if remote else f"MLflow UI (serve the store first: {serve_hint(uri)}):"
    return [head, *(f"  {name}: {ui_link(uri, i)}" for name, i in ids.items())]


def collect_rows(client: MlflowClient, ids: dict[str, str]) -> list[Row]:
    """The rows of every experiment in turn; an experiment without runs is named on stderr."""
    rows = []
    for name, experiment_id in ids.items():
        found = rows_of(name, search_all(client, experiment_id))
        if not found:
            print(f"experiment {name!r} has no runs", file=sys.stderr)
        rows += found
    return rows


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python experiments/compare.py",
        description="Compare the runs of MLflow experiments: table and bar chart.",
    )
    parser.add_argument(
        "experiments", nargs="+", metavar="EXPERIMENT", help="MLflow experiment name(s)"
    )
    parser.add_argument(
        "--metric", action="append", metavar="M", help="metric column (repeat; first is charted)"
    )
    parser.add_argument(
        "--param", action="append", default=[], metavar="P", help="param column, e.g. optim.lr"
    )
    parser.add_argument("--tracking-uri", default=None, help="default: the project's local store")
    parser.add_argument(
        "--out", type=Path, default=None, help="chart PNG path (default: outputs/compare/)"
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    names = list(dict.fromkeys(args.experiments))
    uri = args.tracking_uri or default_tracking_uri()
    try:
        client = open_store(uri)
        ids = experiment_ids(client, uri, names)
    except CompareError as err:
        print(f"compare: {err}", file=sys.stderr)
        return 2
    rows = collect_rows(client, ids)
    if not rows:
        return 1
    metrics = args.metric or default_metrics(rows)
    row_labels = labels(rows)
    header, cells = table(rows, row_labels, args.param, metrics, several=len(names) > 1)
    print(render(header, cells, numeric_from=len(header) - len(metrics)))
    print("", *ui_lines(uri, ids), sep="\n")

    bars = chart_bars(rows, row_labels, metrics[0])
    if not bars:
        print(f"no run has metric {metrics[0]!r}: no chart written", file=sys.stderr)
        return 0
    out = args.out or default_out(names)
    title = metrics[0] if len(names) > 1 else f"{names[0]}: {metrics[0]}"  # several: a legend
    bar_chart(bars, title, out)
    print(f"chart: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
