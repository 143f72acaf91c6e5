"""Reader of Ref-YouTube-VOS-style referring annotations with spoken expressions (A-VOS).

Layout (Ref-YouTube-VOS as distributed, plus the audio of A-VOS beside it):

    <root>/meta_expressions/<split>/meta_expressions.json
    <root>/<split>/JPEGImages/<video>/<frame>.jpg
    <root>/<split>/Annotations/<video>/<frame>.png   (palette PNG: pixel value = object id)
    <root>/<split>/audio/<video>/<expression id>.wav (A-VOS audio expressions)

``meta_expressions.json`` is ``{"videos": {<video>: {"expressions": {<id>: {"exp": <text>,
"obj_id": <id as a string>}}, "frames": [<frame names>]}}}`` (the public file's format, as its
readers in ReferFormer-style code parse it). Where A-VOS stores its audio is UNCONFIRMED (its
release was not checked); the ``audio/<video>/<id>.wav`` layout is this platform's choice.

Scoped down to still images: one frame per expression, the middle one of the video's
``frames`` list (the paper segments every frame of the clip).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from datamodules.errors import DataError
from datamodules.formats.manifest import read_json


@dataclass(frozen=True)
class Expression:
    """One referring expression: its text, the referred object id and its files."""

    video: str
    exp_id: str
    text: str
    obj_id: int
    image: Path
    annotation: Path
    audio: Path


def _line_of(text: str, *keys: str) -> int:
    """1-based line of the last of ``keys`` found in order in ``text`` as object keys (a JSON
    key path: ``"key":``, not a value that spells the same)."""
    at = 0
    for key in keys:
        found = re.compile(rf'"{re.escape(key)}"\s*:').search(text, at)
        if found is None:
            break
        at = found.start()
    return text.count("\n", 0, at) + 1


def read_ref_youtube_vos(root: str | Path, split: str) -> list[Expression]:
    """Every expression of ``split`` in file order; a malformed video or expression entry is a
    :class:`DataError` naming the file and its line."""
    root = Path(root)
    path = root / "meta_expressions" / split / "meta_expressions.json"
    data = read_json(path, "meta_expressions file")
    raw = path.read_text(encoding="utf-8-sig")
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, dict):
        raise DataError(f"{path}:1: expected an object with a 'videos' object")
    out = []
    for video, entry in videos.items():
        frames = entry.get("frames") if isinstance(entry, dict) else None
        expressions = entry.get("expressions") if isinstance(entry, dict) else None
        if not (isinstance(frames, list) and frames and isinstance(expressions, dict)):
            raise DataError(
                f"{path}:{_line_of(raw, video)}: video {video!r} needs a non-empty 'frames' "
                "list and an 'expressions' object"
            )
        frame = str(frames[len(frames) // 2])
        for exp_id, expression in expressions.items():
            text = expression.get("exp") if isinstance(expression, dict) else None
            obj = expression.get("obj_id") if isinstance(expression, dict) else None
            if not (isinstance(text, str) and text.strip() and str(obj).isdigit()):
                raise DataError(
                    f"{path}:{_line_of(raw, video, exp_id)}: expression {exp_id!r} of video "
                    f"{video!r} needs a non-empty 'exp' and an integer 'obj_id'"
                )
            base = root / split
            out.append(
                Expression(
                    video=video,
                    exp_id=str(exp_id),
                    text=text.strip(),
                    obj_id=int(obj),
                    image=base / "JPEGImages" / video / f"{frame}.jpg",
                    annotation=base / "Annotations" / video / f"{frame}.png",
                    audio=base / "audio" / video / f"{exp_id}.wav",
                )
            )
    if not out:
        raise DataError(f"{path}:1: no expressions")
    return out
