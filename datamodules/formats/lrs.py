"""LRS2 / LRS3-style lip-reading lists: one clip id per line, an mp4 and a txt per clip.

    5535415699068794046/00001 NF
    5535415699068794046/00002

Only the first token of a line is used (LRS2's lists carry extra columns); blank lines are
skipped. Clip ``<id>`` is ``<clips_dir>/<id>.mp4`` (video and audio) with its transcript in
``<clips_dir>/<id>.txt``, whose first line is ``Text:  SOME WORDS`` (lower-cased here). The
directory part of an id (the source video in LRS) serves as the speaker; speaker ids are
numbered within one list, so they are not comparable across splits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from datamodules.errors import DataError, DataFileMissing, utf8_text
from datamodules.media import decode_frames
from datamodules.storage import Captions, FileCaptions, pack_strings

#: Default mouth crop (x0, y0, x1, y1) relative to the frame: the lower middle of a face crop.
MOUTH_BOX = (0.25, 0.5, 0.75, 0.95)


def _transcript(txt: Path, where: str) -> str:
    """The lower-cased words of the ``Text:`` first line of an LRS transcript file."""
    if not txt.is_file():
        raise DataFileMissing(f"{where}: transcript file {txt} not found")
    first = txt.read_text(encoding="utf-8-sig", errors="replace").split("\n", 1)[0]
    if not first.startswith("Text:"):
        raise DataError(f"{where}: transcript file {txt} does not start with a 'Text:' line")
    text = " ".join(first[len("Text:") :].split()).lower()
    if not text:
        raise DataError(f"{where}: transcript file {txt} has an empty 'Text:' line")
    return text


def read_lrs(list_file: str | Path, clips_dir: str | Path) -> FileCaptions:
    """Every listed clip, in list order, with its transcript as the one caption; the whole
    list is checked here, and errors name ``list_file:line``."""
    list_file, clips_dir = Path(list_file), Path(clips_dir)
    if not list_file.is_file():
        raise DataFileMissing(f"LRS list file {list_file} not found")
    ids: list[str] = []
    texts: list[str] = []
    with list_file.open(encoding="utf-8-sig") as lines, utf8_text(list_file):
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{list_file}:{lineno}"
            clip = line.split()[0]
            if clip in ids:
                raise DataError(f"{where}: clip {clip!r} is listed twice")
            video = clips_dir / f"{clip}.mp4"
            if not video.is_file():
                raise DataFileMissing(f"{where}: clip file {video} not found")
            ids.append(clip)
            texts.append(_transcript(clips_dir / f"{clip}.txt", where))
    if not ids:
        raise DataError(f"{list_file}: no entries")
    return FileCaptions(
        paths=pack_strings([str(clips_dir / f"{clip}.mp4") for clip in ids]),
        keys=pack_strings(ids),
        captions=Captions.from_lists([[text] for text in texts]),
    )


def speaker_ids(keys: list[str]) -> np.ndarray:
    """``int64`` speaker per clip: the rank of the id's directory part (the source video)."""
    groups = [key.rsplit("/", 1)[0] if "/" in key else key for key in keys]
    names = {name: i for i, name in enumerate(sorted(set(groups)))}
    return np.array([names[g] for g in groups], dtype=np.int64)


def decode_mouth_frames(
    path: str | Path, size: int, box: tuple[float, float, float, float] = MOUTH_BOX
) -> tuple[np.ndarray, float]:
    """Every frame's mouth crop ``box`` (relative x0, y0, x1, y1) in grayscale, resized to
    ``size`` x ``size``: ``uint8 [F, size, size, 1]``, and the stream's frame rate."""
    frames, rate = decode_frames(path)
    crops = []
    for frame in frames:
        image = frame.convert("L")
        w, h = image.size
        crop = (box[0] * w, box[1] * h, box[2] * w, box[3] * h)
        crops.append(np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, box=crop)))
    return np.stack(crops)[..., None], rate
