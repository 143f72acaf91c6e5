"""Measurements in a fresh interpreter, so each has its own peak resident memory (max RSS)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys


def peak_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_isolated(script: str, *args: object) -> dict:
    """``python script --measure *args`` in a subprocess; its last stdout line, parsed as JSON."""
    out = subprocess.run(
        [sys.executable, script, "--measure", *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
