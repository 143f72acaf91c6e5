"""IU-Xray (Open-i) in the R2Gen layout: one ``annotation.json`` with the three splits::

    {"train": [{"id": "CXR2384_IM-0942", "report": "The heart is normal in size. ...",
                "image_path": ["CXR2384_IM-0942/0.png", "CXR2384_IM-0942/1.png"],
                "split": "train"}, ...],
     "val": [...], "test": [...]}

Image paths are relative to the image directory (``<root>/images``). The first image of an
entry is taken as the frontal view, the others as lateral (R2Gen's ``0.png`` / ``1.png``).
R2Gen's reports are headerless findings text; the annotation has no labels, so every label is
-1 (unknown).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datamodules.errors import DataError, DataFileMissing
from datamodules.formats.manifest import read_json
from datamodules.formats.reports import ReportStudies, pack_ragged
from datamodules.storage import pack_strings


def _entry(entry: object, where: str) -> tuple[str, str, list[str]]:
    """(id, report, image paths) of one entry, or :class:`DataError` naming it."""
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected an object")
    key, report, images = entry.get("id"), entry.get("report"), entry.get("image_path")
    if not isinstance(key, str | int) or isinstance(key, bool) or str(key) == "":
        raise DataError(f"{where}: 'id' must be a non-empty string or an integer")
    if not isinstance(report, str) or not report.strip():
        raise DataError(f"{where}: 'report' must be a non-empty string")
    if not isinstance(images, list) or not images or not all(isinstance(p, str) for p in images):
        raise DataError(f"{where}: 'image_path' must be a non-empty list of path strings")
    return str(key), report, images


def read_iu_xray(annotation: str | Path, image_dir: str | Path, split: str) -> ReportStudies:
    """The entries of ``split`` in file order. :class:`DataError` names the file and the entry
    (``train[3]``); a missing image raises :class:`DataFileMissing` naming it and the entry."""
    annotation, image_dir = Path(annotation), Path(image_dir)
    data = read_json(annotation, "IU-Xray annotation file")
    if not isinstance(data, dict) or not isinstance(data.get(split), list) or not data[split]:
        raise DataError(f"{annotation}: expected a non-empty list under {split!r}")
    paths, views, offsets, keys, reports = [], [], [0], [], []
    seen: set[str] = set()
    for n, entry in enumerate(data[split]):
        where = f"{annotation}: {split}[{n}]"
        key, report, images = _entry(entry, where)
        if key in seen:
            raise DataError(f"{where}: id {key!r} is repeated")
        seen.add(key)
        for k, relative in enumerate(images):
            path = image_dir / relative
            if not path.is_file():
                raise DataFileMissing(f"image {path} (listed at {where}) not found")
            paths.append(str(path))
            views.append(0 if k == 0 else 1)
        offsets.append(len(paths))
        keys.append(key)
        reports.append(report)
    return ReportStudies(
        paths=pack_strings(paths),
        views=np.asarray(views, np.int8),
        offsets=np.asarray(offsets, np.int64),
        keys=pack_strings(keys),
        reports=pack_ragged(reports),
        labels={},
    )
