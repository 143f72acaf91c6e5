"""JSONL manifests: one JSON object per line.

    {"image": "images/0001.jpg", "captions": ["a dog on a sofa", "a brown dog"], "id": 17}

``image`` is relative to the image directory (absolute paths are kept); ``captions`` is a
non-empty list of strings (a single ``"caption": "..."`` is accepted too, for one-caption-per-line
manifests). Lines with the same ``id`` (or, without ids, the same image) are one item whose
captions are pooled. Blank lines are skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

from datamodules.base import Captions, FileCaptions, pack_strings


def _captions(record: dict) -> list[str] | None:
    """The record's captions, or None when they are missing or not strings."""
    captions = record.get("captions", [record["caption"]] if "caption" in record else None)
    if not isinstance(captions, list) or not captions:
        return None
    if not all(isinstance(c, str) and c.strip() for c in captions):
        return None
    return captions


def read_jsonl(manifest: str | Path, image_dir: str | Path) -> FileCaptions:
    """Items in first-appearance order; ``ValueError`` names ``file:line`` of a bad line."""
    manifest, image_dir = Path(manifest), Path(image_dir)
    if not manifest.is_file():
        raise FileNotFoundError(f"JSONL manifest {manifest} not found")
    items: dict[str, tuple[str, list[str]]] = {}
    with manifest.open(encoding="utf-8") as lines:
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{manifest}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: invalid JSON ({err.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("image"), str):
                raise ValueError(f"{where}: expected an object with an 'image' path string")
            captions = _captions(record)
            if captions is None:
                raise ValueError(f"{where}: 'captions' must be a non-empty list of strings")
            path = str(image_dir / record["image"])
            key = str(record.get("id", record["image"]))
            if key in items and items[key][0] != path:
                raise ValueError(f"{where}: id {key!r} already names image {items[key][0]}")
            items.setdefault(key, (path, []))[1].extend(captions)
    if not items:
        raise ValueError(f"{manifest}: no entries")
    return FileCaptions(
        paths=pack_strings([path for path, _ in items.values()]),
        keys=pack_strings(list(items)),
        captions=Captions.from_lists([captions for _, captions in items.values()]),
    )
