"""Plain text corpora, one sentence (or document) per line: the wiki1m file of unsupervised
SimCSE (``wiki1m_for_simcse.txt``) and any corpus a researcher exports the same way.

Lines are stripped; blank lines are skipped; a UTF-8 byte-order mark is allowed. A file that is
missing, not UTF-8 or holds no line of text is a one-line :class:`DataError` naming it.
"""

from __future__ import annotations

from pathlib import Path

from datamodules.errors import DataError, DataFileMissing, utf8_text


def read_text_lines(path: str | Path) -> list[str]:
    """The non-blank lines of ``path``, stripped, in file order."""
    path = Path(path)
    if not path.is_file():
        raise DataFileMissing(f"{path}: no such text file")
    with utf8_text(path), path.open(encoding="utf-8-sig") as f:
        lines = [line.strip() for line in f]
    lines = [line for line in lines if line]
    if not lines:
        raise DataError(f"{path}: no line of text (one sentence per line expected)")
    return lines
