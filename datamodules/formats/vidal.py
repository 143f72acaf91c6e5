"""VIDAL-10M manifests (LanguageBind, Zhu et al., ICLR 2024): one JSON object of entries keyed
by video id, the files of each entry under ``root/<folder>``.

    {"<id>": {"folder": "coco_vat_9",
              "raw": "<title>", "mplug": "...", "polish_mplug": "...", "sound_mplug": "...",
              "ofa": ["<caption of frame 0>", ..., "<caption of frame 7>"]}, ...}

Files, as the official loader (``data/base_datasets.py``, ``VAT_dataset``) resolves them:
the video ``<root>/<folder>/<id>.mp4``, its sound ``<root>/<folder>_ffmpeg_mp3/<id>.mp3`` and
the depth maps of 8 frames ``<root>/<folder>/<id>_depth_f8glpn_folder/<k>.png`` (k = 0..7;
GLPN depth, 16-bit millimetres). ``text_type`` picks the captions: one of the four text fields
(one caption per item) or ``ofa`` (the 8 frame captions, all positives of the item).

Scoped down: the official loader trains one modality-language pair per run and draws a random
frame's depth map (the one its OFA caption describes) per sample; here an item is read whole:
the video's middle frame as the image, the first depth map, and the sound (mono, resampled,
padded or cut to the configured length). Errors name the manifest and the entry's line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from datamodules.errors import DataError, DataFileMissing
from datamodules.formats.manifest import read_json

TEXT_FIELDS = ("raw", "mplug", "polish_mplug", "sound_mplug")
TEXT_TYPES = (*TEXT_FIELDS, "ofa")
#: The first of the 8 per-frame depth maps of an entry (official name of the folder).
DEPTH_FOLDER = "{id}_depth_f8glpn_folder"


@dataclass(frozen=True)
class VidalEntry:
    """One entry's files and captions."""

    key: str
    video: Path
    audio: Path
    depth: Path
    captions: list[str]


def _line_of(text: str, key: str) -> int:
    """The line of the manifest on which entry ``key`` starts (its ``"key":``; 1 if it cannot
    be found)."""
    found = re.search(f"{re.escape(json.dumps(key))}\\s*:", text)
    return text.count("\n", 0, found.start()) + 1 if found else 1


def _captions(entry: dict, text_type: str, where: str) -> list[str]:
    if text_type == "ofa":
        value = entry.get("ofa")
        if not isinstance(value, list) or not value:
            raise DataError(f"{where}: 'ofa' must be a non-empty list of captions")
        texts = value
    else:
        texts = [entry.get(text_type)]
    if not all(isinstance(t, str) and t.strip() for t in texts):
        raise DataError(f"{where}: {text_type!r} must be non-empty text, got {texts!r}")
    return [" ".join(t.split()) for t in texts]


def read_vidal(manifest: str | Path, root: str | Path, text_type: str) -> list[VidalEntry]:
    """Every entry of a VIDAL manifest, in file order, checked: its fields, its captions of
    ``text_type`` and that its video, sound and first depth map exist."""
    manifest, root = Path(manifest), Path(root)
    if text_type not in TEXT_TYPES:
        raise ValueError(f"text_type must be one of {TEXT_TYPES}, got {text_type!r}")
    data = read_json(manifest, "VIDAL manifest")
    if not isinstance(data, dict) or not data:
        raise DataError(f"{manifest}: expected a non-empty JSON object of entries keyed by id")
    text = manifest.read_text(encoding="utf-8-sig")
    entries = []
    for key, entry in data.items():
        where = f"{manifest}:{_line_of(text, key)}: entry {key!r}"
        if not isinstance(entry, dict) or not isinstance(entry.get("folder"), str):
            raise DataError(f"{where}: expected an object with a 'folder' string")
        captions = _captions(entry, text_type, where)
        folder = root / entry["folder"]
        files = {
            "video": folder / f"{key}.mp4",
            "audio": root / f"{entry['folder']}_ffmpeg_mp3" / f"{key}.mp3",
            "depth": folder / DEPTH_FOLDER.format(id=key) / "0.png",
        }
        for what, path in files.items():
            if not path.is_file():
                raise DataFileMissing(f"{where}: {what} file {path} not found")
        entries.append(VidalEntry(key, captions=captions, **files))
    return entries
