"""Run a test's worker function in several spawned processes (CPU/gloo DDP tests)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import torch.multiprocessing as mp


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
