"""Wiki-727K-style documents (Koshorek et al., NAACL 2018): one document per file, each section
opened by a header line ``========,<level>,<title>.`` and followed by its sentences, one per
line.

As the TSSP + CSSL preprocessing (SpokenNLP ``emnlp2023-topic_segmentation/src/
preprocess_data.py``, ``process_wiki_folder``) reads them: every header opens a segment,
whatever its level; a header with no sentence under it adds nothing; blank lines are not
sentences. A split is a folder of such files (Wiki-727K's ``train``, ``dev``, ``test``), read
recursively in sorted path order. A malformed header, a sentence before the first header or
a file without a sentence is a one-line :class:`DataError` naming the file (and line).
"""

from __future__ import annotations

import re
from pathlib import Path

from datamodules.errors import DataError, DataFileMissing, utf8_text

HEADER_PREFIX = "========"
_HEADER = re.compile(r"^========,(\d+),(.*)\.$")


def read_wiki_document(path: Path) -> list[list[str]]:
    """The segments of one file, each a list of its sentences."""
    segments: list[list[str]] = []
    with utf8_text(path):
        lines = path.read_text(encoding="utf-8").splitlines()
    opened = False
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if line.startswith(HEADER_PREFIX):
            if not _HEADER.match(line):
                raise DataError(
                    f"{path}:{number}: malformed segment header {line[:60]!r}; expected "
                    "'========,<level>,<title>.'"
                )
            if not segments or segments[-1]:
                segments.append([])
            opened = True
        elif line:
            if not opened:
                raise DataError(f"{path}:{number}: sentence before the first segment header")
            segments[-1].append(line)
    segments = [s for s in segments if s]
    if not segments:
        raise DataError(f"{path}: no sentences under any segment header")
    return segments


def read_wiki_folder(folder: Path) -> list[list[list[str]]]:
    """Every document under ``folder`` (recursively, sorted by path)."""
    if not folder.is_dir():
        raise DataFileMissing(f"document folder {folder} not found")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"{folder}: no document files")
    return [read_wiki_document(path) for path in files]
