"""MIMIC-CXR (JPG) studies: images, free-text reports, CheXpert labels, official splits.

Layout under the root (the ``.csv`` files may also be gzipped, ``.csv.gz``, as distributed)::

    mimic-cxr-2.0.0-metadata.csv   dicom_id, subject_id, study_id, ViewPosition, ...
    mimic-cxr-2.0.0-split.csv      dicom_id, study_id, subject_id, split (train/validate/test)
    mimic-cxr-2.0.0-chexpert.csv   subject_id, study_id, <finding columns>: 1.0 / 0.0 / -1.0 / ""
    files/p10/p10000032/s50414267/<dicom_id>.jpg
    files/p10/p10000032/s50414267.txt

The split and CheXpert files are optional. Without the split file a study's split follows its
subject (``subject_id % 50``: 0 -> val, 1 -> test, else train), so no patient is in two splits.
Without CheXpert labels (or for a study missing from them) every label is -1 (unknown).
A study's images are ordered frontal first (PA, then AP), then the others, by dicom_id.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from datamodules.errors import DataError, DataFileMissing, utf8_text
from datamodules.formats.reports import ReportStudies, pack_ragged
from datamodules.storage import pack_strings

#: Our finding names -> CheXpert label columns.
CHEXPERT_COLUMNS = {
    "nodule": "Lung Lesion",
    "opacity": "Lung Opacity",
    "effusion": "Pleural Effusion",
    "cardiomegaly": "Cardiomegaly",
    "pneumothorax": "Pneumothorax",
}
SPLIT_NAMES = {"train": "train", "validate": "val", "test": "test"}
_VIEW_ORDER = {"PA": 0, "AP": 1}
_LABEL_VALUES = {"1.0": 1, "1": 1, "0.0": 0, "0": 0, "": 0, "-1.0": -1, "-1": -1}


def _resolve(root: Path, name: str) -> Path | None:
    """``root/name``, else its gzipped sibling, else None."""
    for path in (root / name, root / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[str, dict[str, str]]]:
    """``("file:line", row)`` for each row, after checking the header has ``required``."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as f, utf8_text(path):
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
        for row in reader:
            yield f"{path}:{reader.line_num}", row


def _int(row: dict[str, str], column: str, where: str) -> int:
    value = (row.get(column) or "").strip()
    if not value.isdigit():
        raise DataError(f"{where}: {column} must be an integer, got {value!r}")
    return int(value)


def _metadata(path: Path) -> dict[tuple[int, int], list[tuple[str, str, str]]]:
    """(subject, study) -> [(dicom_id, view, file:line)]."""
    studies: dict[tuple[int, int], list[tuple[str, str, str]]] = {}
    seen: set[str] = set()
    for where, row in _rows(path, ("dicom_id", "subject_id", "study_id", "ViewPosition")):
        dicom = (row["dicom_id"] or "").strip()
        if not dicom or dicom in seen:
            raise DataError(f"{where}: dicom_id is empty or repeated ({dicom!r})")
        seen.add(dicom)
        key = (_int(row, "subject_id", where), _int(row, "study_id", where))
        view = (row["ViewPosition"] or "").strip().upper()
        studies.setdefault(key, []).append((dicom, view, where))
    if not studies:
        raise DataError(f"{path}: no images listed")
    return studies


def _splits(path: Path) -> dict[str, str]:
    """dicom_id -> our split name."""
    out = {}
    for where, row in _rows(path, ("dicom_id", "split")):
        split = (row["split"] or "").strip()
        if split not in SPLIT_NAMES:
            raise DataError(f"{where}: split must be one of {tuple(SPLIT_NAMES)}, got {split!r}")
        out[(row["dicom_id"] or "").strip()] = SPLIT_NAMES[split]
    return out


def _chexpert(path: Path) -> dict[tuple[int, int], list[int]]:
    """(subject, study) -> one label per finding of :data:`CHEXPERT_COLUMNS`."""
    columns = tuple(CHEXPERT_COLUMNS.values())
    out = {}
    for where, row in _rows(path, ("subject_id", "study_id", *columns)):
        key = (_int(row, "subject_id", where), _int(row, "study_id", where))
        values = []
        for column in columns:
            value = (row[column] or "").strip()
            if value not in _LABEL_VALUES:
                raise DataError(
                    f"{where}: {column!r} must be 1.0, 0.0, -1.0 or empty, got {value!r}"
                )
            values.append(_LABEL_VALUES[value])
        out[key] = values
    return out


def _study_split(
    dicoms: list[tuple[str, str, str]], splits: dict[str, str] | None, subject: int, source: Path
) -> str:
    """The split of a study: from its images' rows in the split file, else by subject."""
    if splits is None:
        return {0: "val", 1: "test"}.get(subject % 50, "train")
    names = sorted({splits.get(dicom, "none") for dicom, _, _ in dicoms})
    if len(names) != 1 or names[0] == "none":
        raise DataError(
            f"{source}: the images of the study listed at {dicoms[0][2]} have no split "
            f"or several ({', '.join(names)})"
        )
    return names[0]


def _study_dir(files: Path, subject: int, study: int) -> Path:
    return files / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"


def read_mimic_cxr(
    root: str | Path,
    split: str,
    metadata: str = "mimic-cxr-2.0.0-metadata.csv",
    split_file: str = "mimic-cxr-2.0.0-split.csv",
    chexpert: str = "mimic-cxr-2.0.0-chexpert.csv",
    files: str = "files",
) -> ReportStudies:
    """The studies of ``split`` (train / val / test), sorted by (subject, study).

    Validates everything first: CSV columns and values (:class:`DataError` naming ``file:line``),
    every image and report file (:class:`DataFileMissing` naming the path and the manifest row).
    """
    root = Path(root)
    meta_path = _resolve(root, metadata)
    if meta_path is None:
        raise DataFileMissing(f"MIMIC-CXR metadata {root / metadata} not found")
    split_path, chexpert_path = _resolve(root, split_file), _resolve(root, chexpert)
    studies = _metadata(meta_path)
    splits = _splits(split_path) if split_path else None
    labels = _chexpert(chexpert_path) if chexpert_path else {}
    paths, views, offsets, keys, reports = [], [], [0], [], []
    label_rows = []
    for (subject, study), dicoms in sorted(studies.items()):
        if _study_split(dicoms, splits, subject, split_path or meta_path) != split:
            continue
        directory = _study_dir(root / files, subject, study)
        for dicom, view, where in sorted(dicoms, key=lambda d: (_VIEW_ORDER.get(d[1], 2), d[0])):
            image = directory / f"{dicom}.jpg"
            if not image.is_file():
                raise DataFileMissing(f"image {image} (listed at {where}) not found")
            paths.append(str(image))
            views.append(0 if view in _VIEW_ORDER else 1)
        report = directory.with_suffix(".txt")
        if not report.is_file():
            raise DataFileMissing(f"report {report} (study listed at {dicoms[0][2]}) not found")
        reports.append(report.read_text(encoding="utf-8-sig", errors="replace"))
        offsets.append(len(paths))
        keys.append(f"p{subject}/s{study}")
        label_rows.append(labels.get((subject, study), [-1] * len(CHEXPERT_COLUMNS)))
    if not keys:
        raise DataError(f"{meta_path}: no study in split {split!r}")
    table = np.asarray(label_rows, dtype=np.int64)
    return ReportStudies(
        paths=pack_strings(paths),
        views=np.asarray(views, np.int8),
        offsets=np.asarray(offsets, np.int64),
        keys=pack_strings(keys),
        reports=pack_ragged(reports),
        labels={name: table[:, k] for k, name in enumerate(CHEXPERT_COLUMNS)},
    )
