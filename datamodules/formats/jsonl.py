"""JSONL manifests: one JSON object per line.

    {"image": "images/0001.jpg", "captions": ["a dog on a sofa", "a brown dog"], "id": 17}

``image`` is relative to the image directory (absolute paths are kept); ``captions`` is a
non-empty list of strings (a single ``"caption": "..."`` is accepted too, for one-caption-per-line
manifests). Lines with the same ``id`` (or, without ids, the same image) are one item whose
captions are pooled. Blank lines are skipped.

Class labels: a :class:`LabelReader` passed to a reader collects the named fields of each item,
e.g. ``"label": "dog"``: a class name (non-empty string) or a class id (non-negative integer);
absent or ``null`` means no label. The image-text datamodule turns the columns it returns into
``label/<field>`` ids. The COCO and webdataset readers use the same reader.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.errors import DataError, DataFileMissing, utf8_text
from datamodules.storage import Captions, FileCaptions, pack_strings


@dataclass(frozen=True)
class LabelColumn:
    """One label field of a split as read: item ``i`` has the value ``values[codes[i]]``
    (``codes[i] = -1``: no label); ``places[k]`` is where ``values[k]`` first occurs
    (``file:line``), for error messages. The values are all class names (strings) or all
    class ids (integers)."""

    codes: np.ndarray  # int64 [N]
    values: list[str] | list[int]
    places: list[str]

    @property
    def names(self) -> bool:
        """Whether the values are class names rather than class ids."""
        return bool(self.values) and isinstance(self.values[0], str)

    def ids(self, field: str, classes: Sequence[str] | None) -> np.ndarray:
        """Class id per item (-1: none): a name is its position in ``classes``; an integer is
        itself, and with ``classes`` must be below their count. A value outside ``classes``
        raises :class:`DataError` naming where it occurs."""
        if self.names and classes is None:
            raise ValueError(f"label {field!r} holds class names: its classes must be given")
        lookup = np.empty(len(self.values) + 1, dtype=np.int64)
        lookup[-1] = -1  # code -1 indexes the last entry
        position = {name: k for k, name in enumerate(classes or ())}
        for k, (value, place) in enumerate(zip(self.values, self.places, strict=True)):
            if isinstance(value, str):
                if value not in position:
                    raise DataError(
                        f"{place}: label {field!r} is {value!r}, which is not one of the "
                        f"{len(position)} names in data.class_names.{field}"
                    )
                lookup[k] = position[value]
            else:
                if classes is not None and value >= len(classes):
                    raise DataError(
                        f"{place}: label {field!r} is class id {value}, but "
                        f"data.class_names.{field} names only {len(classes)} classes"
                    )
                lookup[k] = value
        return lookup[self.codes]


class LabelReader:
    """Collects label fields of items while a reader goes through a manifest. Items are known by
    a key (the reader's item key); :meth:`columns` lays the values out in item order."""

    def __init__(self, fields: Sequence[str]) -> None:
        self.fields = tuple(fields)
        self._item_codes: dict[str, dict[Hashable, int]] = {f: {} for f in self.fields}
        self._codes: dict[str, dict[str | int, int]] = {f: {} for f in self.fields}
        self._places: dict[str, list[str]] = {f: [] for f in self.fields}

    def add(self, key: Hashable, record: Mapping[str, Any], place: str) -> None:
        """Record the label fields of ``record`` (read at ``place``) for item ``key``;
        :class:`DataError` naming ``place`` for a value that is neither a class name nor a class id,
        that mixes names and ids in one field, or that differs from the item's earlier one."""
        for field in self.fields:
            value = record.get(field)
            if value is None:
                continue
            name = isinstance(value, str) and bool(value.strip())
            number = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            if not (name or number):
                raise DataError(
                    f"{place}: label {field!r} must be a class name or a non-negative class id, "
                    f"got {value!r}"
                )
            codes = self._codes[field]
            if codes and isinstance(value, str) != isinstance(next(iter(codes)), str):
                raise DataError(
                    f"{place}: label {field!r} mixes class names and class ids "
                    f"({next(iter(codes))!r} at {self._places[field][0]}, {value!r} here)"
                )
            code = codes.setdefault(value, len(codes))
            if code == len(self._places[field]):
                self._places[field].append(place)
            earlier = self._item_codes[field].setdefault(key, code)
            if earlier != code:
                raise DataError(
                    f"{place}: label {field!r} is {value!r}, but an earlier entry of the same "
                    f"item gave {list(codes)[earlier]!r}"
                )

    def columns(self, keys: Iterable[Hashable]) -> dict[str, LabelColumn]:
        """Each field's column for the items ``keys``, in that order."""
        keys = list(keys)
        return {
            field: LabelColumn(
                codes=np.array(
                    [self._item_codes[field].get(key, -1) for key in keys], dtype=np.int64
                ),
                values=list(self._codes[field]),
                places=list(self._places[field]),
            )
            for field in self.fields
        }


def captions_of(record: Mapping[str, Any]) -> list[str] | None:
    """The record's captions (``captions`` list or one ``caption``), or None when they are
    missing, empty or not strings."""
    captions = record.get("captions", [record["caption"]] if "caption" in record else None)
    if not isinstance(captions, list) or not captions:
        return None
    if not all(isinstance(c, str) and c.strip() for c in captions):
        return None
    return captions


def json_lines(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(file:line, object)`` for each non-blank line of a JSONL file (a byte-order mark
    allowed); a line that is not JSON, or not a JSON object, is a :class:`DataError` naming it."""
    if not path.is_file():
        raise DataFileMissing(f"JSONL file {path} not found")
    with path.open(encoding="utf-8-sig") as lines, utf8_text(path):
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: invalid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object")
            yield where, record


def read_jsonl(
    manifest: str | Path, image_dir: str | Path, labels: LabelReader | None = None
) -> FileCaptions:
    """Items in first-appearance order; :class:`DataError` names ``file:line`` of a bad line.
    ``labels`` collects the items' label fields, keyed by the item keys (``FileCaptions.keys``)."""
    manifest, image_dir = Path(manifest), Path(image_dir)
    if not manifest.is_file():
        raise DataFileMissing(f"JSONL manifest {manifest} not found")
    items: dict[str, tuple[str, list[str]]] = {}
    for where, record in json_lines(manifest):
        if not isinstance(record.get("image"), str):
            raise DataError(f"{where}: expected an object with an 'image' path string")
        captions = captions_of(record)
        if captions is None:
            raise DataError(f"{where}: 'captions' must be a non-empty list of strings")
        path = str(image_dir / record["image"])
        key = str(record.get("id", record["image"]))
        if key in items and items[key][0] != path:
            raise DataError(f"{where}: id {key!r} already names image {items[key][0]}")
        items.setdefault(key, (path, []))[1].extend(captions)
        if labels is not None:
            labels.add(key, record, where)
    if not items:
        raise DataError(f"{manifest}: no entries")
    return FileCaptions(
        paths=pack_strings([path for path, _ in items.values()]),
        keys=pack_strings(list(items)),
        captions=Captions.from_lists([captions for _, captions in items.values()]),
    )
