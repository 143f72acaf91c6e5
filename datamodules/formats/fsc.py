"""Fluent Speech Commands (Lugosch et al., 2019): ``data/{train,valid,test}_data.csv`` under the
dataset root, one row per utterance, and the wav files the rows name (relative to the root)::

    ,path,speakerId,transcription,action,object,location
    0,wavs/speakers/2BqVo8kV/0a31.wav,2BqVo8kV,Change language,change language,none,none

The intent is the (action, object, location) triple, written ``action|object|location``
(31 intents in FSC). The first, unnamed column (a row number) is ignored; so is
``speakerId`` when absent. Every row is checked when the list is read; a malformed one is a
:class:`~datamodules.errors.DataError` naming ``file:line``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from datamodules.errors import DataError, DataFileMissing, utf8_text

COLUMNS = ("path", "transcription", "action", "object", "location")
#: FSC's file name of each split.
SPLIT_FILES = {"train": "train_data.csv", "val": "valid_data.csv", "test": "test_data.csv"}


@dataclass(frozen=True)
class FSCList:
    """The rows of one split, in file order: absolute wav paths, transcripts, intents."""

    paths: list[Path]
    transcripts: list[str]
    intents: list[str]


def read_fsc(csv_file: str | Path, root: str | Path) -> FSCList:
    """Every row of an FSC split file; wav paths are resolved against ``root`` (the dataset
    folder that holds ``data/`` and ``wavs/``) and must exist."""
    csv_file, root = Path(csv_file), Path(root)
    if not csv_file.is_file():
        raise DataFileMissing(f"FSC split file {csv_file} not found")
    paths: list[Path] = []
    transcripts: list[str] = []
    intents: list[str] = []
    with csv_file.open(encoding="utf-8-sig", newline="") as lines, utf8_text(csv_file):
        reader = csv.DictReader(lines)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{csv_file}:1: header lacks column(s) {missing}")
        for row in reader:
            where = f"{csv_file}:{reader.line_num}"
            if None in row or any(row.get(c) is None for c in COLUMNS):
                raise DataError(f"{where}: expected {len(reader.fieldnames)} fields")
            empty = [c for c in COLUMNS if not row[c].strip()]
            if empty:
                raise DataError(f"{where}: empty field(s) {empty}")
            wav = root / row["path"].strip()
            if not wav.is_file():
                raise DataFileMissing(f"{where}: audio file {wav} not found")
            paths.append(wav)
            transcripts.append(" ".join(row["transcription"].split()).lower())
            intents.append("|".join(row[c].strip() for c in ("action", "object", "location")))
    if not paths:
        raise DataError(f"{csv_file}: no rows")
    return FSCList(paths, transcripts, intents)
