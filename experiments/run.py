"""Train, validate and test one experiment; log it to MLflow.

    python experiments/run.py experiments/hycd.yaml [key=value ...]

Configuration errors are reported as one line naming the key path, exit code 2, before any work.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing

import modules.env  # noqa: E402, F401  (before lightning and mlflow)

from experiments.config import ConfigError, load_experiment  # noqa: E402

USAGE = "usage: python experiments/run.py CONFIG.yaml [key=value ...]"


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    try:
        stages = load_experiment(argv[0], argv[1:])
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    from callbacks.data_health import DataQualityError
    from experiments.stages import run_experiment
    from modules.base import NonFiniteLossError

    leader = rank_zero_only.rank == 0  # under DDP every rank runs this script
    logging.basicConfig(
        level=logging.INFO if leader else logging.WARNING, format="alignlab: %(message)s"
    )
    start = time.perf_counter()
    try:
        results = run_experiment(stages)
    except ConfigError as err:  # found once the run starts, e.g. an unreachable tracking server
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except (NonFiniteLossError, DataQualityError) as err:
        print(f"stopped: {err}", file=sys.stderr)
        return 1
    if leader:
        summarise(results, time.perf_counter() - start)
    return 0


def summarise(results: list, seconds: float) -> None:
    """Print each stage's headline test metrics and where its run is."""
    headline = (
        "/R1",
        "/mAP",
        "/modality_gap",
        "/alignment",
        "/accuracy",
        "/mean_auroc",
        "/mrv",
        "/MAE",
    )
    print(f"\nfinished in {seconds:.0f} s")
    for result in results:
        shown = ", ".join(
            f"{k.split('/', 1)[1]}={value:.3f}"
            for k, value in result.metrics.items()
            if k.startswith("test/") and k.endswith(headline)
        )
        origin = "reused" if result.cached else f"{result.seconds:.0f} s"
        print(f"  {result.name} [{result.hash}, {origin}]: {shown}")
        print(f"    checkpoint {result.checkpoint}")
        print(f"    MLflow: {result.url or result.run_id}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
