"""Video caption manifests: MSR-VTT style JSON and a plain ``video,caption`` CSV.

MSR-VTT JSON::

    {"videos": [{"video_id": "video0", "split": "train"}, ...],
     "sentences": [{"video_id": "video0", "caption": "a man is cooking"}, ...]}

CSV: a header ``video,caption`` and one row per caption; the rows of one video are pooled.

A video id resolves to ``<video_dir>/<id>.<ext>`` (``ext`` in :data:`VIDEO_SUFFIXES`) or to a
folder ``<video_dir>/<id>/`` of frame images; the item's path is that file or folder, and the
loader decodes a folder frame by frame. Items keep first-appearance order; videos without a
caption are left out. Every error names the manifest and the entry (``videos[i]``,
``sentences[i]`` or ``file:line``).
"""

from __future__ import annotations

import csv
from pathlib import Path

from datamodules.errors import DataError, DataFileMissing, utf8_text
from datamodules.formats.manifest import read_json
from datamodules.storage import Captions, FileCaptions, pack_strings

VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv", ".mov")
# names the official MSR-VTT annotations use for our split names
_SPLIT_NAMES = {"val": {"val", "validate", "validation"}}


def resolve_video(video_dir: Path, video_id: str) -> Path | None:
    """The clip file or frame folder of ``video_id``, or None when there is neither."""
    for suffix in VIDEO_SUFFIXES:
        path = video_dir / f"{video_id}{suffix}"
        if path.is_file():
            return path
    folder = video_dir / video_id
    return folder if folder.is_dir() else None


def _files(
    manifest: Path, video_dir: Path, captions: dict[str, list[str]], where: dict[str, str]
) -> FileCaptions:
    """Resolve every captioned video (``where[id]`` names its entry for the error)."""
    if not captions:
        raise DataError(f"{manifest}: no video has a caption")
    paths = []
    for video_id in captions:
        path = resolve_video(video_dir, video_id)
        if path is None:
            raise DataFileMissing(
                f"{manifest}: {where[video_id]}: video {video_id!r} not found in {video_dir} "
                f"(no {video_id}{{{','.join(VIDEO_SUFFIXES)}}} file or {video_id}/ folder)"
            )
        paths.append(str(path))
    return FileCaptions(
        paths=pack_strings(paths),
        keys=pack_strings(list(captions)),
        captions=Captions.from_lists(list(captions.values())),
    )


def _videos(manifest: Path, videos: list, split: str | None) -> dict[str, bool]:
    """Video id -> whether it belongs to ``split`` (all do when no split is asked or given)."""
    wanted = _SPLIT_NAMES.get(split, {split}) if split else None
    out: dict[str, bool] = {}
    for n, video in enumerate(videos):
        video_id = video.get("video_id") if isinstance(video, dict) else None
        if not isinstance(video_id, str) or not video_id or video_id in out:
            raise DataError(f"{manifest}: videos[{n}] has a missing or repeated 'video_id'")
        out[video_id] = wanted is None or "split" not in video or video["split"] in wanted
    return out


def read_msrvtt(
    json_path: str | Path, video_dir: str | Path, split: str | None = None
) -> FileCaptions:
    """The captioned videos of ``split`` (all when None, or when videos carry no ``split``)."""
    manifest, video_dir = Path(json_path), Path(video_dir)
    data = read_json(manifest, "MSR-VTT annotation file")
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("videos", "sentences")
    ):
        raise DataError(f"{manifest}: expected lists 'videos' and 'sentences'")
    in_split = _videos(manifest, data["videos"], split)
    captions: dict[str, list[str]] = {}
    where: dict[str, str] = {}
    for n, sentence in enumerate(data["sentences"]):
        text = sentence.get("caption") if isinstance(sentence, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{manifest}: sentences[{n}] needs a non-empty 'caption' string")
        video_id = sentence.get("video_id")
        if not isinstance(video_id, str) or video_id not in in_split:
            raise DataError(f"{manifest}: sentences[{n}] refers to unknown video_id {video_id!r}")
        if in_split[video_id]:
            captions.setdefault(video_id, []).append(text.strip())
            where.setdefault(video_id, f"sentences[{n}]")
    return _files(manifest, video_dir, captions, where)


def read_video_csv(csv_path: str | Path, video_dir: str | Path) -> FileCaptions:
    """Videos in first-appearance order with their pooled captions."""
    manifest, video_dir = Path(csv_path), Path(video_dir)
    if not manifest.is_file():
        raise DataFileMissing(f"CSV manifest {manifest} not found")
    captions: dict[str, list[str]] = {}
    where: dict[str, str] = {}
    with manifest.open(encoding="utf-8-sig", newline="") as lines, utf8_text(manifest):
        rows = csv.DictReader(lines)
        if rows.fieldnames is None or not {"video", "caption"} <= set(rows.fieldnames):
            raise DataError(f"{manifest}:1: expected a header with columns 'video' and 'caption'")
        for row in rows:
            place = f"{manifest}:{rows.line_num}"
            video_id, text = row.get("video"), row.get("caption")
            if not isinstance(video_id, str) or not video_id.strip():
                raise DataError(f"{place}: missing 'video'")
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{place}: missing 'caption'")
            captions.setdefault(video_id.strip(), []).append(text.strip())
            where.setdefault(video_id.strip(), f"line {rows.line_num}")
    return _files(manifest, video_dir, captions, where)
