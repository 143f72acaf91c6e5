"""Regenerate docs/methods.md's benchmark tables from tracked runs.

    python experiments/benchmark.py [COMPARISON ...] [--seeds 0 1 2] [--no-run] [--curves]
                                    [--set key=value ...] [--docs docs/methods.md]

Each comparison is declared in its method's YAML (``benchmark:``, see
experiments/benchmark_spec.py) with a budget from experiments/budgets/. For every selected
comparison, arm (method, baseline) and seed, the exact config is hashed as run.py hashes it; a
FINISHED run in MLflow with that ``alignlab.config_hash`` and the tag ``alignlab.benchmark`` is
reused, anything missing is run (``python experiments/run.py ...``, earlier stages cached by
hash) and tagged. Every number in the tables is then read back from MLflow, so regenerating
with the runs in place takes seconds and changes nothing, and deleting one method's runs
re-runs only that method. ``--no-run`` only reads (a missing run is an error). ``--curves``
instead runs each budget's learning curve and writes it to docs/benchmarks.md. ``--set`` adds
overrides to every run (a store, tiny data for a test). Plots per budget go to
outputs/benchmark/<budget>.png. Errors are one line, exit 2.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing

import modules.env  # noqa: E402, F401  (before mlflow)

from mlflow.entities import Run  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from experiments.benchmark_spec import (  # noqa: E402
    Arm,
    Comparison,
    load_budgets,
    load_comparisons,
)
from experiments.benchmark_table import RULE, Row, markdown, mean_std, number, replace_block  # noqa: E402
from experiments.config import REPO_ROOT, ConfigError, load_experiment  # noqa: E402
from experiments.stages import stage_hashes  # noqa: E402
from experiments.tracking import default_tracking_uri  # noqa: E402

RUN = REPO_ROOT / "experiments" / "run.py"
TAG = "alignlab.benchmark"
DOCS = REPO_ROOT / "docs" / "methods.md"
CURVES = REPO_ROOT / "docs" / "benchmarks.md"
PLOTS = REPO_ROOT / "outputs" / "benchmark"


class BenchmarkError(Exception):
    """A problem reported as one line with exit code 2."""


def final_hash(argv: list[str]) -> str:
    """The hash run.py gives the experiment's last stage (it covers every earlier stage)."""
    stages = load_experiment(argv[0], argv[1:])
    return stage_hashes(stages)[stages[-1].name]


def execute(argv: list[str]) -> None:
    """``python experiments/run.py ARGV`` in a fresh process (its output streams through)."""
    print("benchmark: running " + " ".join(argv), flush=True)
    code = subprocess.call([sys.executable, str(RUN), *argv])
    if code:
        raise BenchmarkError(f"run.py exited with {code}: {' '.join(argv)}")


class Store:
    """The MLflow runs the tables read: finished, top-level, tagged benchmark runs by hash."""

    def __init__(self, uri: str) -> None:
        self.client = MlflowClient(uri)

    def _experiments(self) -> list[str]:
        return [e.experiment_id for e in self.client.search_experiments()]

    def _top_level(self, query: str) -> list[Run]:
        runs = self.client.search_runs(
            self._experiments(), query, order_by=["attributes.start_time DESC"]
        )
        return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]

    def find(self, digest: str) -> Run | None:
        """The newest finished benchmark run of the config with hash ``digest``."""
        query = (
            f"tags.`alignlab.config_hash` = '{digest}' and tags.`{TAG}` = 'true' "
            "and attributes.status = 'FINISHED'"
        )
        runs = self._top_level(query)
        return runs[0] if runs else None

    def tag_newest(self, digest: str) -> Run:
        """Tag the newest finished run of ``digest`` (the one just run) as a benchmark run."""
        query = f"tags.`alignlab.config_hash` = '{digest}' and attributes.status = 'FINISHED'"
        runs = self._top_level(query)
        if not runs:
            raise BenchmarkError(f"no finished run with config hash {digest} after running it")
        self.client.set_tag(runs[0].info.run_id, TAG, "true")
        return self.client.get_run(runs[0].info.run_id)

    def metrics(self, run: Run, stage: str | None) -> dict[str, float]:
        """The run's metrics, or those of its stage ``stage`` (a nested run)."""
        if stage is None:
            return dict(run.data.metrics)
        query = (
            f"tags.`mlflow.parentRunId` = '{run.info.run_id}' and tags.`alignlab.stage` = '{stage}'"
        )
        children = self.client.search_runs([run.info.experiment_id], query)
        if not children:
            raise BenchmarkError(f"run {run.info.run_id} has no stage {stage}")
        return dict(children[0].data.metrics)


@dataclass
class Plan:
    """What to read or run: every (arm, seed) of the selected comparisons, by config hash."""

    store: Store
    budgets: dict[str, dict]
    extra: tuple[str, ...]
    run_missing: bool
    runs: dict[str, Run]

    def metrics(self, arm: Arm, budget: str, seed: int) -> dict[str, float]:
        argv = arm.argv(self.budgets[budget]["overrides"], seed, self.extra)
        digest = final_hash(argv)
        if digest not in self.runs:
            run = self.store.find(digest)
            if run is None:
                if not self.run_missing:
                    raise BenchmarkError(f"no benchmark run of {' '.join(argv)} (--no-run)")
                execute(argv)
                run = self.store.tag_newest(digest)
            self.runs[digest] = run
        return self.store.metrics(self.runs[digest], arm.stage)


def rows_of(plan: Plan, comparison: Comparison, seeds: list[int]) -> list[Row]:
    """One row per metric of ``comparison``, both arms at every seed."""
    method = {s: plan.metrics(comparison.method, comparison.budget, s) for s in seeds}
    baseline = {s: plan.metrics(comparison.baseline, comparison.budget, s) for s in seeds}
    rows = []
    for metric in comparison.metrics:
        for arm, values in (("method", method), ("baseline", baseline)):
            absent = [s for s in seeds if metric not in values[s]]
            if absent:
                raise BenchmarkError(f"{comparison.name}: the {arm} runs have no {metric}")
        rows.append(
            Row(
                comparison,
                metric,
                {s: method[s][metric] for s in seeds},
                {s: baseline[s][metric] for s in seeds},
            )
        )
    return rows


def _others(
    plan: Plan, known: list[Comparison], chosen: list[Comparison], seeds: list[int]
) -> list[Row]:
    """The rows of the other comparisons in the chosen ones' sections, read only, so that
    regenerating one comparison keeps the rest of its table (one not run yet is left out,
    with a line on stderr)."""
    sections = {c.section for c in chosen}
    reader = Plan(plan.store, plan.budgets, plan.extra, False, plan.runs)
    rows = []
    for comparison in known:
        if comparison in chosen or comparison.section not in sections:
            continue
        try:
            rows += rows_of(reader, comparison, seeds)
        except BenchmarkError as err:
            print(f"benchmark: {comparison.name} left out of its table: {err}", file=sys.stderr)
    return rows


def write_tables(docs: Path, rows: list[Row], budgets: dict[str, dict]) -> list[str]:
    """Rewrite the blocks of every section ``rows`` touch; returns the sections written."""
    sections = list(dict.fromkeys(r.comparison.section for r in rows))
    text = docs.read_text()
    for section in sections:
        body = markdown([r for r in rows if r.comparison.section == section], budgets)
        note = f"Generated by `python experiments/benchmark.py` from MLflow runs ({RULE})."
        text = replace_block(text, section, f"{note}\n\n{body}")
    docs.write_text(text)
    return sections


def curve(plan: Plan, name: str) -> str:
    """The budget's learning curve: its baseline at each value of the curve's key, on the
    curve's own seeds (default: seed 0)."""
    spec = plan.budgets[name]["curve"]
    arm = Arm(REPO_ROOT / "experiments" / spec["config"])
    seeds = spec.get("seeds", [0])
    metrics = spec["metrics"]
    lines = [
        f"| {spec['key']} | " + " | ".join(m.removeprefix("test/") for m in metrics) + " |",
        "| --- |" + " --- |" * len(metrics),
    ]
    for value in spec["values"]:
        point = {name: {"overrides": {spec["key"]: value}}}
        at = Plan(plan.store, point, plan.extra, plan.run_missing, plan.runs)
        runs = [at.metrics(arm, name, seed) for seed in seeds]
        cells = []
        for metric in metrics:
            mean, std = mean_std([run[metric] for run in runs])
            cells.append(number(mean) + (f" ± {number(std)}" if len(runs) > 1 else ""))
        lines.append(f"| {value} | " + " | ".join(cells) + " |")
    seeds_text = ", ".join(str(s) for s in seeds)
    return f"`{spec['config']}`, seed {seeds_text}, test metrics:\n\n" + "\n".join(lines)


def write_curves(plan: Plan, docs: Path) -> None:
    """Run (or read) every budget's learning curve and write it into ``docs``."""
    text = docs.read_text()
    for name, budget in plan.budgets.items():
        if "curve" in budget:
            text = replace_block(text, f"curve {name}", curve(plan, name))
    docs.write_text(text)
    print(f"benchmark: wrote the learning curves of {docs}")


def plot(rows: list[Row], budget: str) -> Path:
    """Method and baseline per comparison (each comparison's first claimed metric, else its
    first metric): bars at the mean, a dot per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = []
    for name in dict.fromkeys(r.comparison.name for r in rows):
        mine = [r for r in rows if r.comparison.name == name]
        claimed = [r for r in mine if r.verdict()]
        chosen.append((claimed or mine)[0])
    fig, axes = plt.subplots(1, len(chosen), figsize=(2.6 * len(chosen), 3.2), squeeze=False)
    for ax, row in zip(axes[0], chosen, strict=True):
        for x, values in enumerate((row.method, row.baseline)):
            points = [values[s] for s in sorted(values)]
            ax.bar(x, mean_std(points)[0], color=("C0", "C7")[x], alpha=0.6)
            ax.plot([x] * len(points), points, "k.")
        ax.set_xticks([0, 1], [row.comparison.name, row.comparison.baseline.label or "baseline"])
        ax.set_title(row.metric.removeprefix("test/"), fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    PLOTS.mkdir(parents=True, exist_ok=True)
    out = PLOTS / f"{budget}.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("comparisons", nargs="*", help="names (default: every comparison)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--no-run", action="store_true", help="read only; missing runs fail")
    parser.add_argument("--curves", action="store_true", help="the budgets' learning curves")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--docs", type=Path, default=DOCS)
    parser.add_argument("--curves-docs", type=Path, default=CURVES)
    parser.add_argument("--experiments", type=Path, default=REPO_ROOT / "experiments")
    args = parser.parse_args(argv)
    try:
        budgets = load_budgets()
        known = load_comparisons(args.experiments, budgets)
        unknown = sorted(set(args.comparisons) - {c.name for c in known})
        if unknown:
            names = ", ".join(c.name for c in known)
            raise BenchmarkError(f"no comparison {unknown[0]} (declared: {names})")
        chosen = [c for c in known if not args.comparisons or c.name in args.comparisons]
        uri = next(
            (s.split("=", 1)[1] for s in args.set if s.startswith("logger.tracking_uri=")),
            default_tracking_uri(),
        )
        plan = Plan(Store(uri), budgets, tuple(args.set), not args.no_run, {})
        if args.curves:
            write_curves(plan, args.curves_docs)
            return 0
        rows = [row for c in chosen for row in rows_of(plan, c, args.seeds)]
        rows += _others(plan, known, chosen, args.seeds)
        order = {c.name: i for i, c in enumerate(known)}
        rows.sort(key=lambda row: order[row.comparison.name])  # stable: metrics keep order
        for section in write_tables(args.docs, rows, budgets):
            print(f"benchmark: wrote the {section} table of {args.docs}")
        for budget in dict.fromkeys(c.budget for c in chosen):
            mine = [r for r in rows if r.comparison.budget == budget]
            print(f"benchmark: plot {plot(mine, budget)}")
    except (BenchmarkError, ConfigError, ValueError) as err:
        print(f"benchmark error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
