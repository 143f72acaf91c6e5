"""Errors in the user's data files, found while a datamodule sets up or reads.

``run.py`` reports a :class:`DataError` as one line (``data error: ...``) and exits 2, like a
configuration error: the message names the file (and line) and what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class DataError(ValueError):
    """A data file that is missing, unreadable or malformed."""


class DataFileMissing(DataError, FileNotFoundError):
    """A data file or folder the data config or a manifest names is not there; still a
    ``FileNotFoundError``, so a missing image at read time is skipped like any bad file."""


@contextmanager
def utf8_text(path: Path) -> Iterator[None]:
    """Reading ``path`` as text: a file that is not UTF-8 is a :class:`DataError` naming it
    (Python's own error names neither the file nor what to do)."""
    try:
        yield
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8"
        ) from None
