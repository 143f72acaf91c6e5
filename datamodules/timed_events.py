"""Untrimmed clips with timed events and queries about them: temporal sentence grounding
(``task: grounding``, G2L) and grounded video QA (``task: qa``, CRA).

One sample per query. Batches: ``video`` float32 [B, T, 3, S, S] in [-1, 1] (the query's whole
clip; ``augment.train`` / ``augment.eval``, one draw per clip), ``text_ids`` / ``text_mask``
[B, L] (the sentence, or the question), ``target/start`` and ``target/end`` float32 [B] (the
query's moment as fractions of the clip; NaN where unknown, e.g. NExT-GQA's training split),
``index`` / ``item_id`` (the query); for questions also ``text_ids_k`` / ``text_mask_k``
[B, K, L] (the question joined with each of its K answer candidates) and ``label/answer``
(the correct candidate's position).

Sources (datamodules/sources/timed_events.py): the built-in clips (``format: embedded``,
datamodules/embedded/timed_events.py), Charades-STA and NExT-GQA (datamodules/formats/grounding.py).
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from datamodules.items import ItemsDataConfig, ItemsDataModule, Transform
from datamodules.sources.timed_events import TASKS
from datamodules.transforms import ClipTransform
from modules.registry import DATAMODULES


@dataclass
class TimedEventsDataConfig(ItemsDataConfig):
    """``num_*``: clips of the built-in data (three queries each by default); ``annotations``,
    ``durations`` (Charades-STA), ``spans`` (NExT-GQA): file names under ``root`` where
    ``{split}`` is the split's name; ``videos``: the clips' folder under ``root``."""

    family: ClassVar[str] = "timed_events"

    name: str = "timed_events"
    task: str = "grounding"  # grounding: sentence queries | qa: questions with candidates
    num_train: int = 1500
    num_val: int = 200
    num_test: int = 200
    num_frames: int = 16
    frame_size: int = 32
    events_per_clip: int = 3
    num_candidates: int = 5
    max_text_len: int = 32
    annotations: str | None = None
    durations: str = "Charades_v1_{split}.csv"
    spans: str = "gsub_{split}.json"
    videos: str = "videos"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"data.task must be one of {TASKS}, got {self.task!r}")
        super().__post_init__()
        if self.num_frames < 2 or self.frame_size < 1:
            raise ValueError("data.num_frames must be >= 2 and data.frame_size positive")


class ClipFrames:
    """Items transform of a clip ``[T, H, W, 3]`` uint8 (one augmentation draw for all its
    frames, seeded per sample)."""

    def __init__(self, steps: Any) -> None:
        self.transform = ClipTransform(steps)

    def __call__(self, raw: np.ndarray, seed: int | None) -> torch.Tensor:
        if seed is not None and self.transform.pipeline is not None:
            self.transform.pipeline.set_random_seed(seed)
        return self.transform(raw)


def as_texts(raw: list[str], seed: int | None = None) -> list[str]:
    """Items transform of ``text_k``: the strings as they are (the collate tokenizes them)."""
    return list(raw)


@DATAMODULES.register("timed_events", TimedEventsDataConfig)
class TimedEventsDataModule(ItemsDataModule):
    """Clips and queries with their moments (generated on first use for the built-in data)."""

    name = "timed_events"
    modalities = ("video", "text")
    pairs = ()  # a query and its clip are not a retrieval pair: grounding metrics instead

    def __init__(self, cfg: TimedEventsDataConfig | None = None, tokenizer: Any = None) -> None:
        super().__init__(cfg or TimedEventsDataConfig(), tokenizer)

    @property
    def labels(self) -> dict[str, int]:
        return {"answer": self.cfg.num_candidates} if self.cfg.task == "qa" else {}

    @property
    def targets(self) -> tuple[str, ...]:
        return ("start", "end")

    def tower_context(self) -> dict[str, Any]:
        return {
            "image_size": self.cfg.frame_size,
            "in_channels": 3,
            "num_frames": self.cfg.num_frames,
            "max_text_len": self.cfg.max_text_len,
        }

    def training_texts(self) -> list[str]:
        """The queries and, for questions, the question-answer texts (tokenizer vocabulary)."""
        texts = super().training_texts()
        split = self.source.split("train")
        if self.cfg.task == "qa":
            for item in range(split.num_items):
                texts.extend(split.load.texts[item])
        return texts

    def _transforms(self, train: bool) -> dict[str, Transform]:
        steps = self.cfg.augment.train if train else self.cfg.augment.eval
        transforms: dict[str, Transform] = {"video": ClipFrames(steps)}
        if self.cfg.task == "qa":
            transforms["text_k"] = as_texts
        return transforms
