"""The one registry of data sources: per family, the built-in generator and each format on disk.

A source turns a family's data config into what the family's datamodule reads per split
(captions, the item loader, labels, siblings, ...: the family's split type, defined with its
sources in ``datamodules/sources/<family>.py``). It is registered under ``(family, format)``;
the family's config accepts exactly the registered formats (``data.format``) and its datamodule
looks its source up once (``SOURCES.build(cfg)``), so registering a reader adds a format
without editing the datamodule. Readers stay in ``datamodules/formats/`` and generators in
``datamodules/embedded/``: a source is the thin adapter between them and the datamodule.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from datamodules.errors import DataFileMissing
from datamodules.storage import SPLITS, cache_root

S = TypeVar("S", bound="Source")
Split = TypeVar("Split")


class Source(Generic[Split]):
    """One way a family's data is made. A subclass implements ``_split(split)``; data on disk
    keeps ``needs_root``, a generator (:class:`EmbeddedSource`) does not."""

    #: Set by :meth:`SourceRegistry.register`.
    family: ClassVar[str] = ""
    format: ClassVar[str] = ""
    #: Whether the config must name ``data.root``.
    needs_root: ClassVar[bool] = True

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self._splits: dict[str, Split] = {}

    @classmethod
    def check(cls, cfg: Any) -> None:
        """Config checks of this source, after the shared ones (none by default)."""

    def prepare(self) -> None:
        """Make the data once (a generator writes it into the cache); nothing on disk."""

    def describe(self) -> str:
        """Where the data comes from, for logs."""
        return f"{self.format} at {self.cfg.root}"

    def root(self) -> Path:
        """``data.root``, checked to be a directory."""
        root = Path(self.cfg.root or "")
        if not root.is_dir():
            raise DataFileMissing(f"data root {root} not found")
        return root

    def split(self, split: str) -> Split:
        """What the datamodule reads of ``split`` (read and checked once)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if split not in self._splits:
            self._splits[split] = self._split(split)
        return self._splits[split]

    def _split(self, split: str) -> Split:
        raise NotImplementedError


class EmbeddedSource(Source[Split]):
    """A built-in generator: ``generator_of(cfg)`` its parameters, ``ensure(generator, cache)``
    writes the data once and returns its directory; ``name`` prefixes its cache key in logs."""

    needs_root = False
    name: ClassVar[str] = ""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.generator = self.generator_of(cfg)

    @staticmethod
    def generator_of(cfg: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def ensure(generator: Any, cache: Path) -> Path:
        raise NotImplementedError

    @classmethod
    def check(cls, cfg: Any) -> None:
        """The generator's own checks, as one-line ``data.<field>: ...`` errors (its messages
        start with the field name)."""
        try:
            cls.generator_of(cfg)
        except ValueError as err:
            raise ValueError(f"data.{err}") from None

    def directory(self) -> Path:
        """The generated data's directory in the cache (generated if absent)."""
        return self.ensure(self.generator, cache_root(self.cfg.cache_dir))

    def prepare(self) -> None:
        self.directory()

    def describe(self) -> str:
        return f"embedded {self.name}-{self.generator.key()}"


class SourceRegistry:
    """``(family, format)`` -> source class; a family's formats in registration order."""

    def __init__(self) -> None:
        self._sources: dict[tuple[str, str], type[Source]] = {}

    def register(self, family: str, format: str) -> Callable[[type[S]], type[S]]:
        """Class decorator: register a source as ``format`` of ``family``."""

        def decorate(cls: type[S]) -> type[S]:
            if (family, format) in self._sources:
                raise ValueError(f"source {format!r} of {family} is registered twice")
            cls.family, cls.format = family, format
            self._sources[family, format] = cls
            return cls

        return decorate

    def formats(self, family: str) -> tuple[str, ...]:
        """The registered formats of ``family``."""
        return tuple(fmt for fam, fmt in self._sources if fam == family)

    def get(self, family: str, format: str) -> type[Source]:
        """The source class of ``format``; an unknown one lists the family's formats."""
        if (family, format) not in self._sources:
            raise ValueError(f"data.format must be one of {self.formats(family)}, got {format!r}")
        return self._sources[family, format]

    def build(self, cfg: Any) -> Source:
        """The source of a data config (its ``family`` and ``format``)."""
        return self.get(cfg.family, cfg.format)(cfg)


SOURCES = SourceRegistry()
