"""Run a test's worker function in several spawned processes (CPU/gloo DDP tests), or
``experiments/run.py`` in the test's own process."""

from __future__ import annotations

import contextlib
import io
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[1]


def spawn_and_wait(worker: Callable, args: tuple, nprocs: int, timeout: float = 120) -> None:
    """``worker(rank, *args)`` in ``nprocs`` spawned processes; fails the test (after killing
    them) if they have not all finished within ``timeout`` seconds."""
    context = mp.start_processes(worker, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not context.join(timeout=2):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"distributed workers did not finish within {timeout:.0f} s")


def run_main(argv: list[str]) -> tuple[int, str]:
    """``python experiments/run.py ARGV`` in this process, without a subprocess's ~10 s of
    imports (tests/test_ddp_lightning.py's one-process run; resuming is checked across real
    processes here): main()'s exit code and what it wrote to stderr (its log lines and its one-line
    errors). ``sys.executable`` and run.py's path in front of ``argv`` are dropped. Torch runs
    on one thread, as the subprocesses of these tests do (``OMP_NUM_THREADS=1``), so a run here
    computes the numbers one there does; the loggers and SIGTERM handler main() sets are
    restored afterwards."""
    from experiments import run as run_script

    argv = [str(arg) for arg in argv]
    while argv and argv[0] in (sys.executable, str(REPO / "experiments" / "run.py")):
        argv = argv[1:]
    loggers = [logging.getLogger(name) for name in run_script.PACKAGES]
    saved = [(logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    sigterm = signal.getsignal(signal.SIGTERM)
    threads = torch.get_num_threads()
    stderr = io.StringIO()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stderr(stderr):
            code = run_script.main(argv)
    finally:
        torch.set_num_threads(threads)
        signal.signal(signal.SIGTERM, sigterm)
        for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)
    return code, stderr.getvalue()
