"""Test-wide settings: a private data/stage cache so tests never touch the user's."""

from __future__ import annotations

import modules.env  # noqa: F401  (before any test imports mlflow, lightning or albumentations)

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Point ``ALIGNLAB_CACHE`` at a session temp dir (embedded data is generated there)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ALIGNLAB_CACHE", str(tmp_path_factory.mktemp("alignlab-cache")))
    yield
    mp.undo()
