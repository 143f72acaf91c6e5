"""Reader of CelebA's attribute and partition tables as CSV (the files SepCLR's official
``celeba_accessories/create_dataset.py`` reads: ``list_attr_celeba.csv``, a header
``<file column>,<attribute>,...`` then one image per line with every attribute -1 or 1; and the
standard ``list_eval_partition.csv``, ``image_id,partition`` with 0 train, 1 val, 2 test).

The first column names the image file (``File_name`` in the official code, ``image_id`` in the
Kaggle release: any header); every other column holds an integer from ``allowed``. Blank lines
are skipped. A malformed line (wrong number of fields, no file name, a value that is not one of
``allowed``) is a :class:`DataError` naming the file and the line.
"""

from __future__ import annotations

import csv
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.errors import DataError, DataFileMissing, utf8_text

ATTRIBUTE_VALUES = (-1, 1)
PARTITIONS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class AttributeTable:
    """One table: image file names [N], column names [A] and values int64 [N, A]."""

    files: list[str]
    columns: list[str]
    values: np.ndarray

    def column(self, name: str, path: Path) -> np.ndarray:
        """The values of column ``name`` (int64 [N]); an unknown name is a DataError."""
        if name not in self.columns:
            raise DataError(f"{path}: no column {name!r} (columns: {', '.join(self.columns)})")
        return self.values[:, self.columns.index(name)]


def read_attribute_table(path: Path, allowed: Collection[int] = ATTRIBUTE_VALUES) -> AttributeTable:
    """The table in ``path`` (see the module docstring)."""
    if not path.is_file():
        raise DataFileMissing(f"attribute table {path} not found")
    with utf8_text(path):
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    rows = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if not rows:
        raise DataError(f"{path}: empty (expected a header line)")
    (_, header), body = rows[0], rows[1:]
    columns = [c.strip() for c in next(csv.reader([header]))][1:]
    if not columns:
        raise DataError(f"{path}:{rows[0][0]}: the header names no column after the file column")
    files, values = [], []
    for number, line in body:
        fields = [f.strip() for f in next(csv.reader([line]))]
        if len(fields) != len(columns) + 1 or not fields[0]:
            raise DataError(
                f"{path}:{number}: expected a file name and {len(columns)} values, got "
                f"{line.strip()!r}"
            )
        try:
            row = [int(v) for v in fields[1:]]
        except ValueError:
            row = []
        if len(row) != len(columns) or any(v not in allowed for v in row):
            raise DataError(
                f"{path}:{number}: values must be one of {sorted(allowed)}, got {fields[1:]}"
            )
        files.append(fields[0])
        values.append(row)
    if not files:
        raise DataError(f"{path}: lists no images")
    return AttributeTable(files, columns, np.asarray(values, dtype=np.int64))
