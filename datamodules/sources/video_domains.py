"""Sources of the video-domains family (labelled source videos, unlabelled target videos):
the built-in two-domain moving shapes, and the UCF-HMDB / Jester split lists on disk; each
split handed over as an :class:`~datamodules.items.ItemSplit`.

Training item ``i`` is source video ``i`` with its label (batch keys ``video``,
``label/action``) and target video ``i mod N_target`` without one (``target_video``); the
target's labels never enter a training batch. Validation and test items are target videos with
their labels (``video``, ``label/action``): the adaptation is scored on the target domain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datamodules.embedded.video_domains import (
    VideoDomainsConfig,
    ensure_video_domains,
    load_labels,
)
from datamodules.formats.da_lists import read_video_list
from datamodules.items import ItemSplit, MappedItems
from datamodules.media import decode_video, read_frame_folder
from datamodules.sources import SOURCES, EmbeddedSource, Source
from datamodules.storage import MappedArray


class ListedClips:
    """Clips of listed video files (PyAV) or frame folders: ``num_frames`` frames sampled
    uniformly, resized to ``size`` x ``size``; a corrupt file raises ``MediaError``."""

    def __init__(self, paths: list[Path], num_frames: int, size: int) -> None:
        self.paths, self.num_frames, self.size = paths, num_frames, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        path = self.paths[i]
        read = read_frame_folder if path.is_dir() else decode_video
        return read(path, self.num_frames, self.size)


class DomainPairs:
    """Training item ``i`` -> ``{"video": source[i], "target_video": target[i mod N_t]}``."""

    def __init__(self, source: Any, target: Any, num_target: int) -> None:
        """``source``, ``target``: item -> clip ``uint8 [T, S, S, 3]`` (arrays or listed files)."""
        self.source, self.target, self.num_target = source, target, num_target

    def __call__(self, item: int) -> dict[str, np.ndarray]:
        return {"video": self.source[item], "target_video": self.target[item % self.num_target]}


def generator_of(cfg: Any) -> VideoDomainsConfig:
    return VideoDomainsConfig(
        num_train=cfg.num_train,
        num_val=cfg.num_val,
        num_test=cfg.num_test,
        num_frames=cfg.num_frames,
        frame_size=cfg.frame_size,
        seed=cfg.seed,
    )


@SOURCES.register("video_domains", "embedded")
class EmbeddedVideoDomains(EmbeddedSource[ItemSplit]):
    """The built-in moving-shapes actions on a grey (source) and a striped colour (target)
    background."""

    name = "video_domains"
    generator_of = staticmethod(generator_of)
    ensure = staticmethod(ensure_video_domains)

    def _split(self, split: str) -> ItemSplit:
        directory = self.directory()
        labels = load_labels(directory, split)
        target = MappedArray(directory / f"{split}_target.npy")
        if split != "train":
            return ItemSplit(
                len(labels["target"]),
                MappedItems({"video": target}),
                labels={"action": labels["target"]},
            )
        source = MappedArray(directory / f"{split}_source.npy")
        pairs = DomainPairs(source, target, len(labels["target"]))
        return ItemSplit(len(labels["source"]), pairs, labels={"action": labels["source"]})


@SOURCES.register("video_domains", "da_list")
class ListedVideoDomains(Source[ItemSplit]):
    """UCF-HMDB / Jester split lists (datamodules/formats/da_lists.py) under ``data.root``:
    ``source_list`` and ``target_list`` (training; the target's labels are read and dropped),
    ``val_list`` and ``test_list`` (target videos with labels), paths under ``videos``."""

    @classmethod
    def check(cls, cfg: Any) -> None:
        missing = [
            k
            for k in ("source_list", "target_list", "val_list", "test_list")
            if not getattr(cfg, k)
        ]
        if missing:
            raise ValueError(f"data.format 'da_list' needs data.{missing[0]}")
        if not cfg.class_names:
            raise ValueError("data.format 'da_list' needs data.class_names (one per label id)")

    def describe(self) -> str:
        return f"da_list at {self.cfg.root} ({self.cfg.source_list} -> {self.cfg.target_list})"

    def _clips(self, list_field: str) -> tuple[ListedClips, np.ndarray]:
        root = self.root()
        listed = read_video_list(root / getattr(self.cfg, list_field), root / self.cfg.videos)
        classes = len(self.cfg.class_names)
        if max(listed.labels) >= classes:
            raise ValueError(
                f"{root / getattr(self.cfg, list_field)}: label {max(listed.labels)} >= the "
                f"{classes} data.class_names"
            )
        clips = ListedClips(listed.paths, self.cfg.num_frames, self.cfg.frame_size)
        return clips, np.asarray(listed.labels, dtype=np.int64)

    def _split(self, split: str) -> ItemSplit:
        if split != "train":
            clips, labels = self._clips(f"{split}_list")
            return ItemSplit(len(clips), MappedItems({"video": clips}), labels={"action": labels})
        source, labels = self._clips("source_list")
        target, _ = self._clips("target_list")  # unlabelled in training
        return ItemSplit(
            len(source), DomainPairs(source, target, len(target)), labels={"action": labels}
        )
