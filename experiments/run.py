"""Train, validate and test one experiment; log it to MLflow.

    python experiments/run.py experiments/hycd.yaml [key=value ...]

Configuration, data-file and checkpoint errors are reported as one line, exit code 2, before
any work. SIGTERM (exit 143) and Ctrl+C (exit 130) mark the running MLflow run KILLED and say
where the last checkpoint is and how to resume from it.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing

import modules.env  # noqa: E402, F401  (before lightning and mlflow)

from experiments.config import ConfigError, load_experiment  # noqa: E402

USAGE = "usage: python experiments/run.py CONFIG.yaml [key=value ...]"
PACKAGES = ("alignlab", "callbacks", "datamodules", "experiments", "modules")  # their loggers
EXIT_CODES = {"SIGTERM": 143, "SIGINT": 130}  # 128 + the signal's number, as shells report it


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    show_logs(logging.INFO)
    try:
        stages = load_experiment(argv[0], argv[1:])
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    from callbacks.data_health import DataQualityError
    from datamodules.errors import DataError
    from experiments.checkpoints import CheckpointError
    from experiments.stages import Interrupted, Invocation, run_experiment
    from modules.base import NonFiniteLossError

    leader = rank_zero_only.rank == 0  # under DDP every rank runs this script
    if not leader:
        show_logs(logging.WARNING)
    signal.signal(signal.SIGTERM, _terminate)
    start = time.perf_counter()
    try:
        results = run_experiment(stages, invocation=Invocation(argv[1:], config=argv[0]))
    except ConfigError as err:  # found once the run starts, e.g. an unreachable tracking server
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except DataError as err:
        print(f"data error: {err}", file=sys.stderr)
        return 2
    except CheckpointError as err:
        print(f"checkpoint error: {err}", file=sys.stderr)
        return 2
    except (NonFiniteLossError, DataQualityError) as err:
        print(f"stopped: {err}", file=sys.stderr)
        return 1
    except Interrupted as err:
        print(interrupted_message(err, argv), file=sys.stderr)
        return EXIT_CODES[err.signal_name]
    if leader:
        summarise(results, time.perf_counter() - start)
    return 0


def show_logs(level: int) -> None:
    """alignlab's own log lines on stderr, prefixed ``alignlab:``. Not through the root logger:
    Lightning prints its own lines itself and would print them twice."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("alignlab: %(message)s"))
    for name in PACKAGES:
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM outside the trainer: stop now, through the same path as Lightning's SIGTERM.

    While a trainer runs, Lightning's own handler calls this one after noting the signal and
    stops at the next batch boundary (after the step's checkpoint), so this one does nothing."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if signal.getsignal(signal.SIGTERM) is _terminate:
        raise SIGTERMException(EXIT_CODES["SIGTERM"])


def interrupted_message(err: object, argv: list[str]) -> str:
    """One line: what stopped the run, the stage's checkpoint and the command that resumes."""
    command = " ".join(["python", "experiments/run.py", *argv, "resume=true"])
    if err.checkpoint is None:
        return (
            f"stopped by {err.signal_name} in stage {err.stage} before its first checkpoint "
            f"(checkpoint_every_n_steps); run marked KILLED; `{command}` starts that stage again"
        )
    return (
        f"stopped by {err.signal_name} in stage {err.stage}; run marked KILLED; "
        f"last checkpoint {err.checkpoint}; resume with `{command}`"
    )


def summarise(results: list, seconds: float) -> None:
    """Print each stage's headline test metrics and where its run is."""
    from experiments.run_page import headline

    print(f"\nfinished in {seconds:.0f} s")
    for result in results:
        shown = ", ".join(
            f"{key.split('/', 1)[1]}={value:.3f}" for key, value in headline(result.metrics).items()
        )
        origin = "reused" if result.cached else f"{result.seconds:.0f} s"
        print(f"  {result.name} [{result.hash}, {origin}]: {shown}")
        print(f"    checkpoint {result.checkpoint}")
        print(f"    MLflow: {result.url or result.run_id}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
