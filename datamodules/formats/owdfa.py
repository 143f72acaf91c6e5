"""Reader of the OW-DFA protocol meta files (Sun et al., ICCV 2023; official
``TencentYoutuResearch/OpenWorld-DeepFakeAttribution``, ``owdfa/datasets/dfa.py``): one CSV per
protocol (``Protocol1_openset_fake_large_merge_meta.csv``, ...), a header and one face image per
row with the columns

    img_path     the image file (absolute, or relative to the data root)
    label        the source (attack method) id, a non-negative integer; known sources first
    tag          1 labelled, 2 unlabelled (training), 0 left out (``mod: all`` drops it)
    image_source the dataset the image comes from (optional; the split is stratified by it)

(other columns, e.g. ``method``, ``face_type``, ``pseudo``, are ignored). The official loader
splits each (image_source, label) group into ``train_ratio_per_class`` (0.8) training rows and
the rest for testing with pandas' ``sample(random_state=seed)``; :func:`split_rows` does the same
stratified split with numpy's generator (same proportions, not the same rows). A malformed row is
a :class:`DataError` naming the file and the line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.errors import DataError, DataFileMissing, utf8_text

REQUIRED = ("img_path", "label", "tag")
TAGS = (0, 1, 2)


@dataclass(frozen=True)
class MetaRows:
    """The kept rows (tag 1 or 2) of one or more meta files."""

    paths: list[str]
    labels: np.ndarray  # int64 [N]
    tags: np.ndarray  # int64 [N]: 1 labelled, 2 unlabelled
    groups: list[str]  # image_source per row ("" without the column)


def read_meta(path: Path) -> MetaRows:
    """The rows of one OW-DFA meta CSV with tag 1 or 2 (tag 0: left out, as ``mod: all``)."""
    if not path.is_file():
        raise DataFileMissing(f"OW-DFA meta file {path} not found")
    with utf8_text(path), path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise DataError(f"{path}:1: header lacks column(s) {missing}; it has {header}")
        col = {name: header.index(name) for name in header}
        paths, labels, tags, groups = [], [], [], []
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
            label, tag = row[col["label"]].strip(), row[col["tag"]].strip()
            if not label.isdigit():
                raise DataError(f"{path}:{line}: label {label!r} is not a non-negative integer")
            if not tag.isdigit() or int(tag) not in TAGS:
                raise DataError(f"{path}:{line}: tag {tag!r} must be one of {TAGS}")
            if not row[col["img_path"]].strip():
                raise DataError(f"{path}:{line}: empty img_path")
            if int(tag) == 0:
                continue
            paths.append(row[col["img_path"]].strip())
            labels.append(int(label))
            tags.append(int(tag))
            groups.append(row[col["image_source"]].strip() if "image_source" in col else "")
    if not paths:
        raise DataError(f"{path}: no rows with tag 1 or 2")
    return MetaRows(paths, np.asarray(labels, np.int64), np.asarray(tags, np.int64), groups)


def split_rows(rows: MetaRows, train_ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ids of the training and the held-out part: ``train_ratio`` of every
    (image_source, label) group (rounded) for training, seeded."""
    rng = np.random.default_rng(seed)
    keys = sorted({(g, int(y)) for g, y in zip(rows.groups, rows.labels, strict=True)})
    train = []
    for group, label in keys:
        ids = np.flatnonzero(
            (np.asarray(rows.groups, dtype=object) == group) & (rows.labels == label)
        )
        train.append(rng.choice(ids, round(train_ratio * len(ids)), replace=False))
    train_ids = np.sort(np.concatenate(train))
    held_out = np.setdiff1d(np.arange(len(rows.paths)), train_ids)
    return train_ids, held_out
