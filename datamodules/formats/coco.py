"""COCO captions annotation files (``captions_train2017.json`` and the Karpathy-style splits
written in the same form): ``images`` with ``id`` and ``file_name`` (relative to the image
directory), ``annotations`` with ``image_id`` and ``caption``. Images without captions are
left out; items keep the order of ``images``.

Class labels (a :class:`LabelReader`): a label field may sit on an image entry or on its caption
annotations (which must then agree). An integer ``category_id`` is replaced by its category's
``name`` when the file has COCO's ``categories`` list (``[{"id": 3, "name": "dog"}, ...]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datamodules.errors import DataError
from datamodules.formats.jsonl import LabelReader
from datamodules.formats.manifest import read_json
from datamodules.storage import Captions, FileCaptions, pack_strings


def _category_names(data: dict, annotations: Path) -> dict[int, str]:
    """``categories`` as id -> name (empty without the list)."""
    names: dict[int, str] = {}
    for n, category in enumerate(data.get("categories") or []):
        if not (
            isinstance(category, dict)
            and isinstance(category.get("id"), int)
            and isinstance(category.get("name"), str)
            and category["name"].strip()
        ):
            raise DataError(f"{annotations}: categories[{n}] needs an integer 'id' and a 'name'")
        names[category["id"]] = category["name"]
    return names


def _named(record: dict[str, Any], names: dict[int, str], place: str) -> dict[str, Any]:
    """``record`` with an integer ``category_id`` replaced by its category's name."""
    category = record.get("category_id")
    if not names or not isinstance(category, int) or isinstance(category, bool):
        return record
    if category not in names:
        raise DataError(f"{place}: category_id {category} is not in 'categories'")
    return {**record, "category_id": names[category]}


def read_coco(
    annotations: str | Path, image_dir: str | Path, labels: LabelReader | None = None
) -> FileCaptions:
    """:class:`DataError` names the file and the entry (``images[i]``, ``annotations[i]``).
    ``labels`` collects the items' label fields, keyed by the item keys (``FileCaptions.keys``:
    the image ids as strings)."""
    annotations, image_dir = Path(annotations), Path(image_dir)
    data = read_json(annotations, "COCO annotation file")
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations")
    ):
        raise DataError(f"{annotations}: expected lists 'images' and 'annotations'")
    files: dict[int | str, str] = {}
    for n, image in enumerate(data["images"]):
        if not isinstance(image, dict) or not isinstance(image.get("file_name"), str):
            raise DataError(f"{annotations}: images[{n}] needs a 'file_name' string")
        if not isinstance(image.get("id"), int | str) or image["id"] in files:
            raise DataError(f"{annotations}: images[{n}] has a missing or repeated 'id'")
        files[image["id"]] = image["file_name"]
    captions: dict[int | str, list[str]] = {}
    for n, ann in enumerate(data["annotations"]):
        text = ann.get("caption") if isinstance(ann, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{annotations}: annotations[{n}] needs a non-empty 'caption'")
        image_id = ann.get("image_id")
        if not isinstance(image_id, int | str) or image_id not in files:
            raise DataError(
                f"{annotations}: annotations[{n}] refers to unknown image_id {image_id!r}"
            )
        captions.setdefault(image_id, []).append(text.strip())
    ids = [i for i in files if i in captions]
    if not ids:
        raise DataError(f"{annotations}: no image has a caption")
    if labels is not None:
        names = _category_names(data, annotations)
        for n, image in enumerate(data["images"]):
            if image["id"] in captions:
                place = f"{annotations}: images[{n}]"
                labels.add(str(image["id"]), _named(image, names, place), place)
        for n, ann in enumerate(data["annotations"]):
            place = f"{annotations}: annotations[{n}]"
            labels.add(str(ann["image_id"]), _named(ann, names, place), place)
    return FileCaptions(
        paths=pack_strings([str(image_dir / files[i]) for i in ids]),
        keys=pack_strings([str(i) for i in ids]),
        captions=Captions.from_lists([captions[i] for i in ids]),
    )
