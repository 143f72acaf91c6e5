"""Word-embedding alignment files: MUSE bilingual dictionaries, fastText ``.vec`` vectors and
word lists (the gold shifted words of a semantic-shift benchmark).

- **MUSE dictionary** (``en-es.0-5000.txt``; the Si-En benchmark's ``si-en`` files): one
  ``source target`` pair per line, separated by whitespace; a source word may have several
  lines (several translations).
- **fastText ``.vec``** (``wiki.en.vec``, ``cc.si.300.vec``): a header ``N D``, then ``N`` lines
  ``word v1 ... vD``.
- **word list**: one word per line.

Blank lines are skipped; a malformed line is a one-line :class:`DataError` naming
``file:line``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datamodules.errors import DataError, DataFileMissing, utf8_text


def _lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of the non-blank lines of ``path``."""
    if not path.is_file():
        raise DataFileMissing(f"{path}: no such file")
    with utf8_text(path), path.open(encoding="utf-8-sig") as f:
        return [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]


def read_dictionary(path: str | Path) -> list[tuple[str, str]]:
    """The ``(source, target)`` pairs of a MUSE dictionary, in file order."""
    path = Path(path)
    pairs = []
    for n, line in _lines(path):
        fields = line.split()
        if len(fields) != 2:
            raise DataError(
                f"{path}:{n}: expected 'source target' (two words), got {len(fields)} fields"
            )
        pairs.append((fields[0], fields[1]))
    if not pairs:
        raise DataError(f"{path}: no dictionary pair ('source target' per line expected)")
    return pairs


def read_word_list(path: str | Path) -> list[str]:
    """The words of a one-word-per-line file, in file order."""
    path = Path(path)
    words = []
    for n, line in _lines(path):
        fields = line.split()
        if len(fields) != 1:
            raise DataError(f"{path}:{n}: expected one word, got {len(fields)} fields")
        words.append(fields[0])
    return words


def read_vec(path: str | Path) -> tuple[list[str], np.ndarray]:
    """The words and float32 vectors ``[N, D]`` of a fastText ``.vec`` text file."""
    path = Path(path)
    lines = _lines(path)
    if not lines:
        raise DataError(f"{path}: empty (a header 'N D' expected)")
    n0, header = lines[0]
    try:
        count, dim = (int(x) for x in header.split())
    except ValueError:
        raise DataError(f"{path}:{n0}: expected the header 'N D' (two integers)") from None
    if len(lines) - 1 != count:
        raise DataError(f"{path}: the header says {count} vectors, the file has {len(lines) - 1}")
    words, vectors = [], np.empty((count, dim), dtype=np.float32)
    seen: set[str] = set()
    for i, (n, line) in enumerate(lines[1:]):
        fields = line.split()
        if len(fields) != dim + 1:
            raise DataError(f"{path}:{n}: expected a word and {dim} numbers, got {len(fields)}")
        try:
            vectors[i] = [float(x) for x in fields[1:]]
        except ValueError:
            raise DataError(f"{path}:{n}: a value of {fields[0]!r} is not a number") from None
        if fields[0] in seen:
            raise DataError(f"{path}:{n}: word {fields[0]!r} appears twice")
        seen.add(fields[0])
        words.append(fields[0])
    return words, vectors
