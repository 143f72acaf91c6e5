"""The data block's fields that every family shares, and their checks, written once.

A family's config subclasses :class:`SourceDataConfig` (the built-in generator or a format on
disk under ``root``: the sources registered for its ``family``, datamodules/sources) and adds
its own fields; it may change a shared field's default by declaring it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from datamodules.sources import SOURCES
from datamodules.transforms import AugmentConfig


@dataclass
class DataConfig:
    """Batches, workers, split sizes of the built-in data, augmentation, cache and seed."""

    name: str = ""
    batch_size: int = 64  # the global contrastive batch, whatever the number of processes
    eval_batch_size: int = 256
    num_workers: int = 0
    num_train: int = 10000  # split sizes of the built-in data
    num_val: int = 1000
    num_test: int = 1000
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    cache_dir: str | None = None  # None: $ALIGNLAB_CACHE, else ~/.cache/alignlab
    seed: int = 0
    # training/evaluation stops (callbacks.data_health) when more than this fraction of the
    # samples had a bad file (missing, corrupt); below it bad files are skipped and logged
    max_skipped_fraction: float = 0.01

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_skipped_fraction <= 1.0:
            raise ValueError("data.max_skipped_fraction must be between 0 and 1")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError(
                "data.batch_size and data.eval_batch_size must be positive, got "
                f"{self.batch_size} and {self.eval_batch_size}"
            )
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if min(self.num_train, self.num_val, self.num_test) < 1:
            raise ValueError("data.num_train, num_val and num_test must be at least 1")


@dataclass
class SourceDataConfig(DataConfig):
    """Data that is the built-in generator (``format: embedded``) or a format on disk under
    ``root``: one of the sources registered for ``family`` (:meth:`formats`)."""

    family: ClassVar[str] = ""
    format: str = "embedded"
    root: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        source = SOURCES.get(self.family, self.format)
        if source.needs_root and not self.root:
            raise ValueError(f"data.format {self.format!r} needs data.root")
        source.check(self)

    @classmethod
    def formats(cls) -> tuple[str, ...]:
        """The family's formats: its registered sources."""
        return SOURCES.formats(cls.family)
