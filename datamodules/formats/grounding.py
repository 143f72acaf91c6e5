"""Temporal grounding and grounded video QA annotations: Charades-STA and NExT-GQA.

Charades-STA (Gao et al. 2017, ``charades_sta_<split>.txt``), one query per line::

    <video id> <start seconds> <end seconds>##<sentence>

with the clips' durations from Charades' own ``Charades_v1_<split>.csv`` (columns ``id`` and
``length``, seconds).

NExT-GQA (Xiao et al. 2024, doc-doc/NExT-GQA ``datasets/nextgqa``): ``<split>.csv`` with the
columns ``video_id, frame_count, width, height, question, answer, qid, type, a0, a1, a2, a3, a4``
(``answer``: the text of the correct candidate; NExT-QA's own files give its index 0-4, also
accepted) and, for val / test only, ``gsub_<split>.json``::

    {"<video_id>": {"duration": 34, "location": {"<qid>": [[1.2, 5.8], ...]}, "fps": 29.97}}

A question's segment is the span of its segments (first start to last end); training questions
have none (NExT-GQA trains without grounding labels): their times are NaN.

Both give :class:`TimedQueries`: times as fractions of the clip's duration, in [0, 1]. Every
error names the file and the line (CSV / text) or the entry (JSON).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datamodules.errors import DataError, DataFileMissing, utf8_text
from datamodules.formats.manifest import read_json

NEXTGQA_COLUMNS = ("video_id", "question", "answer", "qid", "a0", "a1", "a2", "a3", "a4")


@dataclass
class TimedQueries:
    """Queries over clips: query ``i`` is ``texts[i]`` about video ``videos[clip_of[i]]``,
    its moment ``[start[i], end[i]]`` (fractions of the clip; NaN: unknown); with questions,
    ``candidates[i]`` (answer texts) and ``answer[i]`` (the correct one's position)."""

    videos: list[str]
    clip_of: np.ndarray
    texts: list[str]
    start: np.ndarray
    end: np.ndarray
    candidates: list[list[str]] = field(default_factory=list)
    answer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _opened(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataFileMissing(f"{what} {path} not found")
    return path


def read_durations(csv_path: str | Path) -> dict[str, float]:
    """Video id -> duration (seconds) from a Charades ``Charades_v1_<split>.csv``."""
    path = _opened(Path(csv_path), "Charades durations file")
    out: dict[str, float] = {}
    with path.open(encoding="utf-8-sig", newline="") as lines, utf8_text(path):
        rows = csv.DictReader(lines)
        if rows.fieldnames is None or not {"id", "length"} <= set(rows.fieldnames):
            raise DataError(f"{path}:1: expected a header with columns 'id' and 'length'")
        for row in rows:
            try:
                length = float(row["length"])
            except (TypeError, ValueError):
                length = math.nan
            if not row["id"] or not length > 0:
                raise DataError(f"{path}:{rows.line_num}: needs an 'id' and a positive 'length'")
            out[row["id"].strip()] = length
    return out


def read_charades_sta(sta_path: str | Path, durations: dict[str, float]) -> TimedQueries:
    """Every query of a Charades-STA file; videos in first-appearance order."""
    path = _opened(Path(sta_path), "Charades-STA annotation file")
    videos: dict[str, int] = {}
    clip_of, texts, start, end = [], [], [], []
    with utf8_text(path):
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        head, sep, sentence = line.partition("##")
        fields = head.split()
        where = f"{path}:{number}"
        if not sep or len(fields) != 3 or not sentence.strip():
            raise DataError(f"{where}: expected '<video> <start> <end>##<sentence>'")
        video, *times = fields
        try:
            t0, t1 = (float(t) for t in times)
        except ValueError:
            raise DataError(f"{where}: start and end must be numbers, got {times}") from None
        if video not in durations:
            raise DataError(f"{where}: video {video!r} has no duration in the Charades CSV")
        length = durations[video]
        if not 0 <= t0 < t1:
            raise DataError(f"{where}: expected 0 <= start < end, got {t0} and {t1}")
        clip_of.append(videos.setdefault(video, len(videos)))
        texts.append(sentence.strip())
        start.append(min(t0 / length, 1.0))
        end.append(min(t1 / length, 1.0))
    if not texts:
        raise DataError(f"{path}: no query")
    return TimedQueries(list(videos), np.array(clip_of), texts, np.array(start), np.array(end))


def _segments(gsub: dict, path: Path) -> dict[tuple[str, str], tuple[float, float]]:
    """(video id, qid) -> the question's span as fractions of the video's duration."""
    out = {}
    for video, entry in gsub.items():
        where = f"{path}: entry {video!r}"
        if not isinstance(entry, dict) or not isinstance(entry.get("location"), dict):
            raise DataError(f"{where}: expected 'duration' and a 'location' object")
        duration = entry.get("duration")
        if not isinstance(duration, int | float) or duration <= 0:
            raise DataError(f"{where}: 'duration' must be a positive number")
        for qid, spans in entry["location"].items():
            ok = (
                isinstance(spans, list)
                and spans
                and all(
                    isinstance(s, list)
                    and len(s) == 2
                    and all(isinstance(t, int | float) for t in s)
                    for s in spans
                )
            )
            if not ok or not 0 <= spans[0][0] <= spans[-1][1]:
                raise DataError(f"{where}: location {qid!r} must be a list of [start, end]")
            out[video, str(qid)] = (
                min(spans[0][0] / duration, 1.0),
                min(spans[-1][1] / duration, 1.0),
            )
    return out


def read_nextgqa(csv_path: str | Path, gsub_path: str | Path | None) -> TimedQueries:
    """Every question of a NExT-GQA ``<split>.csv``, its span from ``gsub_path`` (None: the
    training split, no spans)."""
    path = _opened(Path(csv_path), "NExT-GQA question file")
    spans = {}
    if gsub_path is not None:
        gsub = read_json(Path(gsub_path), "NExT-GQA grounding file")
        if not isinstance(gsub, dict):
            raise DataError(f"{gsub_path}: expected an object of videos")
        spans = _segments(gsub, Path(gsub_path))
    videos: dict[str, int] = {}
    out = TimedQueries([], np.zeros(0), [], np.zeros(0), np.zeros(0))
    clip_of, start, end, answer = [], [], [], []
    with path.open(encoding="utf-8-sig", newline="") as lines, utf8_text(path):
        rows = csv.DictReader(lines)
        missing = set(NEXTGQA_COLUMNS) - set(rows.fieldnames or ())
        if missing:
            raise DataError(f"{path}:1: header lacks the columns {sorted(missing)}")
        for row in rows:
            where = f"{path}:{rows.line_num}"
            candidates = [(row[f"a{k}"] or "").strip() for k in range(5)]
            video, question = (row["video_id"] or "").strip(), (row["question"] or "").strip()
            if not video or not question or not all(candidates):
                raise DataError(f"{where}: needs a video_id, a question and answers a0-a4")
            given = (row["answer"] or "").strip()
            if given in candidates:
                position = candidates.index(given)
            elif given in {"0", "1", "2", "3", "4"}:
                position = int(given)
            else:
                raise DataError(f"{where}: answer {given!r} is neither a candidate nor 0-4")
            t0, t1 = spans.get((video, (row["qid"] or "").strip()), (math.nan, math.nan))
            if gsub_path is not None and math.isnan(t0):
                raise DataError(f"{where}: question {row['qid']!r} has no span in {gsub_path}")
            clip_of.append(videos.setdefault(video, len(videos)))
            out.texts.append(question if question.endswith("?") else f"{question}?")
            out.candidates.append(candidates)
            start.append(t0)
            end.append(t1)
            answer.append(position)
    if not out.texts:
        raise DataError(f"{path}: no question")
    out.videos, out.clip_of = list(videos), np.array(clip_of)
    out.start, out.end, out.answer = np.array(start), np.array(end), np.array(answer)
    return out
