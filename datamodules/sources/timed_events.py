"""Sources of the ``timed_events`` family: the built-in clips with timed events, Charades-STA
(sentence queries, ``task: grounding``) and NExT-GQA (questions, ``task: qa``); each split
handed over as an :class:`~datamodules.items.ItemSplit` of queries: ``load(i)`` gives the
query's clip (``video``) and, for questions, the question joined with each answer candidate
(``text_k``); ``captions`` the query; targets ``start`` / ``end`` (fractions of the clip);
label ``answer`` (questions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datamodules.embedded.timed_events import (
    TimedEventsConfig,
    ensure_timed_events,
    load_record,
)
from datamodules.errors import DataFileMissing
from datamodules.formats.grounding import (
    TimedQueries,
    read_charades_sta,
    read_durations,
    read_nextgqa,
)
from datamodules.formats.msrvtt import resolve_video
from datamodules.items import ItemSplit
from datamodules.sources import SOURCES, EmbeddedSource, Source
from datamodules.sources.video_text import FileClips
from datamodules.storage import Captions, FileCaptions, MappedArray, pack_strings

TASKS = ("grounding", "qa")


def qa_texts(question: str, candidates: list[str]) -> list[str]:
    """The question joined with each candidate: the texts CRA scores (``text_k``)."""
    return [f"{question} {answer}" for answer in candidates]


class ClipQueries:
    """Query id -> ``{"video": frames of its clip}`` (+ ``text_k``, the question joined with
    each candidate, when there are candidates)."""

    def __init__(
        self, clips: MappedArray | FileClips, clip_of: np.ndarray, texts: list[list[str]]
    ) -> None:
        self.clips, self.clip_of, self.texts = clips, clip_of, texts

    def __call__(self, item: int) -> dict[str, Any]:
        raw: dict[str, Any] = {"video": self.clips[int(self.clip_of[item])]}
        if self.texts:
            raw["text_k"] = self.texts[item]
        return raw


def split_of(queries: TimedQueries, clips: MappedArray | FileClips, task: str) -> ItemSplit:
    """The :class:`ItemSplit` of ``queries`` over ``clips`` for ``task``."""
    qa = task == "qa"
    pairs = zip(queries.texts, queries.candidates, strict=True) if qa else ()
    return ItemSplit(
        len(queries.texts),
        ClipQueries(clips, queries.clip_of, [qa_texts(q, c) for q, c in pairs]),
        captions=Captions.from_lists([[t] for t in queries.texts]),
        labels={"answer": queries.answer.astype(np.int64)} if qa else {},
        targets={
            "start": queries.start.astype(np.float32),
            "end": queries.end.astype(np.float32),
        },
    )


@SOURCES.register("timed_events", "embedded")
class EmbeddedTimedEvents(EmbeddedSource[ItemSplit]):
    """The built-in clips: one query per event (its sentence, or its question)."""

    name = "timed_events"
    ensure = staticmethod(ensure_timed_events)

    @staticmethod
    def generator_of(cfg: Any) -> TimedEventsConfig:
        return TimedEventsConfig(
            num_train=cfg.num_train,
            num_val=cfg.num_val,
            num_test=cfg.num_test,
            num_frames=cfg.num_frames,
            frame_size=cfg.frame_size,
            events_per_clip=cfg.events_per_clip,
            num_candidates=cfg.num_candidates,
            seed=cfg.seed,
        )

    @classmethod
    def check(cls, cfg: Any) -> None:
        try:
            cls.generator_of(cfg)
        except ValueError as err:
            raise ValueError(f"data.{err}") from None

    def _split(self, split: str) -> ItemSplit:
        directory = self.directory()
        record = load_record(directory, split)
        events = [e for clip in record["events"] for e in clip]
        per_clip = [len(clip) for clip in record["events"]]
        clip_of = np.repeat(np.arange(len(per_clip)), per_clip)
        length = self.generator.num_frames
        queries = TimedQueries(
            videos=[str(i) for i in range(len(per_clip))],
            clip_of=clip_of,
            texts=[
                t
                for clip in record["questions" if self.cfg.task == "qa" else "sentences"]
                for t in clip
            ],
            start=np.array([e.start / length for e in events]),
            end=np.array([e.end / length for e in events]),
            candidates=[c for clip in record["candidates"] for c in clip],
            answer=np.array([a for clip in record["answer"] for a in clip]),
        )
        return split_of(queries, MappedArray(directory / f"{split}_frames.npy"), self.cfg.task)


class TimedQueriesOnDisk(Source[ItemSplit]):
    """Queries read from ``data.root``: clips in ``data.videos`` (files or frame folders)."""

    #: The task this format has (Charades-STA: sentence queries; NExT-GQA: questions).
    task = ""

    @classmethod
    def check(cls, cfg: Any) -> None:
        if cfg.task != cls.task:
            raise ValueError(f"data.format {cls.format!r} needs data.task: {cls.task}")

    def _queries(self, split: str) -> TimedQueries:
        raise NotImplementedError

    def _split(self, split: str) -> ItemSplit:
        queries = self._queries(split)
        video_dir = self.root() / self.cfg.videos
        paths = []
        for video in queries.videos:
            path = resolve_video(video_dir, video)
            if path is None:
                raise DataFileMissing(f"video {video!r} of the {split} split not in {video_dir}")
            paths.append(str(path))
        files = FileCaptions(
            pack_strings(paths),
            pack_strings(queries.videos),
            Captions.from_lists([[v] for v in queries.videos]),
        )
        clips = FileClips(files, self.cfg.num_frames, self.cfg.frame_size)
        return split_of(queries, clips, self.task)


def _path(root: Path, pattern: str, split: str) -> Path:
    return root / pattern.format(split=split)


@SOURCES.register("timed_events", "charades_sta")
class CharadesSta(TimedQueriesOnDisk):
    """Charades-STA: ``annotations`` (default ``charades_sta_{split}.txt``) and the clips'
    durations from ``durations`` (default ``Charades_v1_{split}.csv``)."""

    task = "grounding"

    def _queries(self, split: str) -> TimedQueries:
        root = self.root()
        durations = read_durations(_path(root, self.cfg.durations, split))
        pattern = self.cfg.annotations or "charades_sta_{split}.txt"
        return read_charades_sta(_path(root, pattern, split), durations)


@SOURCES.register("timed_events", "nextgqa")
class NextGqa(TimedQueriesOnDisk):
    """NExT-GQA: ``annotations`` (default ``{split}.csv``) and, except for the training split,
    the spans ``spans`` (default ``gsub_{split}.json``)."""

    task = "qa"

    def _queries(self, split: str) -> TimedQueries:
        root = self.root()
        spans = None if split == "train" else _path(root, self.cfg.spans, split)
        return read_nextgqa(_path(root, self.cfg.annotations or "{split}.csv", split), spans)
