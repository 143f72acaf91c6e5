"""Reader of the video domain-adaptation split lists of UCF-HMDB and Jester (TA3N, CoMix,
TranSVAE): one text file per domain and split, one video per line,

    <path> <label>                 (UCF-HMDB "full" lists)
    <path> <num_frames> <label>    (TA3N's frame-folder lists)
    <path>,<label>                 (CoMix's ``video_splits/*.csv``: Jester folder ids)

separated by whitespace or one comma; the label is the last field, a non-negative integer;
``path`` is relative to the videos directory and names a video file (decoded with PyAV) or a
folder of frame images. Blank lines are skipped. A malformed line is a :class:`DataError`
naming the file and the line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datamodules.errors import DataError, DataFileMissing, utf8_text


@dataclass(frozen=True)
class VideoList:
    """The videos of one list: paths (joined to the videos directory) and labels."""

    paths: list[Path]
    labels: list[int]


def _fields(line: str) -> list[str]:
    """A line's fields: split at one comma when it has one, else at whitespace."""
    return [f.strip() for f in line.split(",")] if "," in line else line.split()


def read_video_list(path: Path, video_dir: Path) -> VideoList:
    """The videos listed in ``path``, their paths under ``video_dir``."""
    if not path.is_file():
        raise DataFileMissing(f"video list {path} not found")
    paths, labels = [], []
    with utf8_text(path):
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = _fields(line)
        if len(fields) not in (2, 3) or not fields[0]:
            raise DataError(
                f"{path}:{number}: expected '<path> <label>' or '<path> <frames> <label>', "
                f"got {line.strip()!r}"
            )
        if not fields[-1].isdigit():
            raise DataError(f"{path}:{number}: label {fields[-1]!r} is not a non-negative integer")
        paths.append(video_dir / fields[0])
        labels.append(int(fields[-1]))
    if not paths:
        raise DataError(f"{path}: lists no videos")
    return VideoList(paths, labels)
