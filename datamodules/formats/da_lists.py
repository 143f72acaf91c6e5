"""Readers of the domain-adaptation split lists: one text file per domain and split, one item
per line, ``path`` relative to the items' directory, the label last (a non-negative integer).
Blank lines are skipped; a malformed line is a :class:`DataError` naming the file and the line.

Videos (UCF-HMDB and Jester: TA3N, CoMix, TranSVAE), separated by whitespace or one comma; the
path names a video file (decoded with PyAV) or a folder of frame images:

    <path> <label>                 (UCF-HMDB "full" lists)
    <path> <num_frames> <label>    (TA3N's frame-folder lists)
    <path>,<label>                 (CoMix's ``video_splits/*.csv``: Jester folder ids)

Images (Office-31, Office-Home and VisDA-C: SHOT, LFTL and most domain adaptation code),
separated by whitespace:

    <path> <label>
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datamodules.errors import DataError, DataFileMissing, utf8_text


@dataclass(frozen=True)
class LabelledList:
    """The items of one list: paths (joined to the items' directory) and labels."""

    paths: list[Path]
    labels: list[int]


@dataclass(frozen=True)
class ListFormat:
    """What one kind of list allows: its item kind (for messages), the field counts, whether
    one comma may separate the fields, and the expected line shapes (for messages)."""

    kind: str
    counts: tuple[int, ...]
    commas: bool
    expected: str


VIDEO_LISTS = ListFormat(
    "video", (2, 3), commas=True, expected="'<path> <label>' or '<path> <frames> <label>'"
)
IMAGE_LISTS = ListFormat("image", (2,), commas=False, expected="'<path> <label>'")


def _fields(line: str, commas: bool) -> list[str]:
    """A line's fields: split at one comma when allowed and present, else at whitespace."""
    return [f.strip() for f in line.split(",")] if commas and "," in line else line.split()


def read_labelled_list(path: Path, item_dir: Path, form: ListFormat) -> LabelledList:
    """The items listed in ``path`` in ``form``, their paths under ``item_dir``."""
    if not path.is_file():
        raise DataFileMissing(f"{form.kind} list {path} not found")
    paths, labels = [], []
    with utf8_text(path):
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = _fields(line, form.commas)
        if len(fields) not in form.counts or not fields[0]:
            raise DataError(f"{path}:{number}: expected {form.expected}, got {line.strip()!r}")
        if not fields[-1].isdigit():
            raise DataError(f"{path}:{number}: label {fields[-1]!r} is not a non-negative integer")
        paths.append(item_dir / fields[0])
        labels.append(int(fields[-1]))
    if not paths:
        raise DataError(f"{path}: lists no {form.kind}s")
    return LabelledList(paths, labels)


def read_video_list(path: Path, video_dir: Path) -> LabelledList:
    """The videos listed in ``path``, their paths under ``video_dir``."""
    return read_labelled_list(path, video_dir, VIDEO_LISTS)


def read_image_list(path: Path, image_dir: Path) -> LabelledList:
    """The images listed in ``path``, their paths under ``image_dir``."""
    return read_labelled_list(path, image_dir, IMAGE_LISTS)
