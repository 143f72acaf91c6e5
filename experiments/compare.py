"""Compare the runs of one MLflow experiment: a table of params and metrics, and a bar chart.

    python experiments/compare.py EXPERIMENT [--metric M ...] [--param P ...]
                                  [--tracking-uri URI] [--out chart.png]

Reads the project's local store (mlflow/mlflow.db, or $ALIGNLAB_MLFLOW_DIR) unless
--tracking-uri names another, e.g. http://127.0.0.1:5000 for a server (bash mlflow/serve.sh).
One row per run, oldest first; the stage runs of a chained experiment follow their parent,
indented, with their stage. Metrics default to test/retrieval/mean_R1 and every test/.../R1
the runs have; a run without a metric or param shows '-'. The chart (default
compare-EXPERIMENT.png) has one bar per run for the first metric. Errors are one line, exit 2.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing

import modules.env  # noqa: E402, F401  (before mlflow)

from mlflow.entities import Run  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from experiments.tracking import default_tracking_uri, unreachable  # noqa: E402

HEADLINE = "test/retrieval/mean_R1"
MISSING = "-"


class CompareError(Exception):
    """A problem reported as one line with exit code 2."""


def open_experiment(uri: str, name: str) -> tuple[MlflowClient, str]:
    """A client on ``uri`` and the id of experiment ``name`` in it."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise CompareError(f"no MLflow store at {uri} (no run has logged there yet)")
    problem = unreachable(uri)
    if problem is not None:
        raise CompareError(f"--tracking-uri: cannot reach MLflow at {uri} ({problem})")
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(name)
    if found is None:
        known = sorted(e.name for e in client.search_experiments())
        raise CompareError(
            f"unknown experiment {name!r} in {uri}; known: {', '.join(known) or 'none'}"
        )
    return client, found.experiment_id


def fetch_runs(client: MlflowClient, experiment_id: str) -> list[tuple[Run, bool]]:
    """Every active run as (run, nested), oldest first, each parent followed by its stages."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], order_by=["attributes.start_time ASC"], page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    ids = {run.info.run_id for run in runs}
    children: dict[str, list[Run]] = {}
    top: list[Run] = []
    for run in runs:
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent in ids:
            children.setdefault(parent, []).append(run)
        else:
            top.append(run)
    ordered: list[tuple[Run, bool]] = []
    for run in top:
        ordered.append((run, False))
        ordered.extend((child, True) for child in children.get(run.info.run_id, []))
    return ordered


def default_metrics(runs: list[Run]) -> list[str]:
    """``test/retrieval/mean_R1`` first, then every other ``test/.../R1`` any run has."""
    present = {key for run in runs for key in run.data.metrics}
    r1 = sorted(k for k in present if k.startswith("test/") and k.endswith("R1") and k != HEADLINE)
    return [HEADLINE, *r1]


def name_of(run: Run) -> str:
    """The run's name (its id if it has none)."""
    return run.info.run_name or run.info.run_id


def stage_of(run: Run) -> str:
    """A stage run's stage, a chain parent's stages (``pretrain+refine``), or '-'."""
    tags = run.data.tags
    if "alignlab.stage" in tags:
        return tags["alignlab.stage"]
    return tags.get("alignlab.stages", MISSING).replace(",", "+") or MISSING


def table(
    runs: list[tuple[Run, bool]], params: list[str], metrics: list[str]
) -> tuple[list[str], list[list[str]]]:
    """The header and one row of strings per run."""
    header = ["run", "stage", "method", "data", "status", *params, *metrics]
    rows = []
    for run, nested in runs:
        tags, data = run.data.tags, run.data
        rows.append(
            [
                f"  {name_of(run)}" if nested else name_of(run),
                stage_of(run),
                tags.get("alignlab.method", MISSING),
                tags.get("alignlab.data", MISSING),
                run.info.status,
                *(data.params.get(p, MISSING) for p in params),
                *(f"{data.metrics[m]:.3f}" if m in data.metrics else MISSING for m in metrics),
            ]
        )
    return header, rows


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


def bar_chart(labels: list[str], values: list[float], title: str, out: Path) -> None:
    """Horizontal bars (long run names stay readable), first run at the top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.4 * len(labels)))
    ax.barh(range(len(labels)), values, color="tab:blue")
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.bar_label(ax.containers[0], fmt="%.3f", padding=3)
    ax.set_title(title)
    ax.margins(x=0.15)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python experiments/compare.py",
        description="Compare the runs of one MLflow experiment: table and bar chart.",
    )
    parser.add_argument("experiment", metavar="EXPERIMENT", help="MLflow experiment name")
    parser.add_argument(
        "--metric", action="append", metavar="M", help="metric column (repeat; first is charted)"
    )
    parser.add_argument(
        "--param", action="append", default=[], metavar="P", help="param column, e.g. optim.lr"
    )
    parser.add_argument("--tracking-uri", default=None, help="default: the project's local store")
    parser.add_argument("--out", type=Path, default=None, help="chart PNG path")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    uri = args.tracking_uri or default_tracking_uri()
    try:
        client, experiment_id = open_experiment(uri, args.experiment)
    except CompareError as err:
        print(f"compare: {err}", file=sys.stderr)
        return 2
    runs = fetch_runs(client, experiment_id)
    if not runs:
        print(f"experiment {args.experiment!r} has no runs", file=sys.stderr)
        return 1
    metrics = args.metric or default_metrics([run for run, _ in runs])
    header, rows = table(runs, args.param, metrics)
    print(render(header, rows, numeric_from=5 + len(args.param)))

    first = metrics[0]
    charted = [
        (name_of(run), run.data.metrics[first]) for run, _ in runs if first in run.data.metrics
    ]
    if not charted:
        print(f"no run has metric {first!r}: no chart written", file=sys.stderr)
        return 0
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", args.experiment)
    out = args.out or Path(f"compare-{safe}.png")
    labels, values = zip(*charted, strict=True)
    bar_chart(list(labels), list(values), f"{args.experiment}: {first}", out)
    print(f"\nchart: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
