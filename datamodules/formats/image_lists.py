"""Reader of the image lists of Office-31, Office-Home and VisDA-C (SHOT, LFTL and most domain
adaptation code): one text file per domain, one image per line,

    <path> <label>

separated by whitespace; ``path`` is relative to the images directory and the label is a
non-negative integer. Blank lines are skipped. A malformed line is a :class:`DataError` naming
the file and the line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datamodules.errors import DataError, DataFileMissing, utf8_text


@dataclass(frozen=True)
class ImageList:
    """The images of one list: paths (joined to the images directory) and labels."""

    paths: list[Path]
    labels: list[int]


def read_image_list(path: Path, image_dir: Path) -> ImageList:
    """The images listed in ``path``, their paths under ``image_dir``."""
    if not path.is_file():
        raise DataFileMissing(f"image list {path} not found")
    paths, labels = [], []
    with utf8_text(path):
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise DataError(f"{path}:{number}: expected '<path> <label>', got {line.strip()!r}")
        if not fields[1].isdigit():
            raise DataError(f"{path}:{number}: label {fields[1]!r} is not a non-negative integer")
        paths.append(image_dir / fields[0])
        labels.append(int(fields[1]))
    if not paths:
        raise DataError(f"{path}: lists no images")
    return ImageList(paths, labels)
