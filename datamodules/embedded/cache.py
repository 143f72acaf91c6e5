"""How generated datasets are named and written: a hash of their config, written once, atomically.

A dataset directory is written into a temporary sibling and renamed into place, so a
directory under the final name is always complete and concurrent writers (DDP ranks, two runs)
cannot mix their files; later calls reuse it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any


def config_key(cfg: Any, version: int) -> str:
    """Short hash of a generator's dataclass config and its version."""
    blob = json.dumps({**asdict(cfg), "version": version}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def write_once(target: Path, write: Callable[[Path], None]) -> Path:
    """``target``, created first by ``write(directory)`` if it does not exist yet."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # not a lost race with another writer
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
