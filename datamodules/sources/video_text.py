"""Sources of the video-text family: the built-in moving-shapes clips, and MSR-VTT or CSV
manifests of clip files or frame folders on disk; each split handed over as a
:class:`VideoTextSplit`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.embedded.moving_shapes import (
    MovingShapesConfig,
    ensure_moving_shapes,
    load_split,
    zero_shot_prompts,
)
from datamodules.formats.msrvtt import read_msrvtt, read_video_csv
from datamodules.media import decode_video, read_frame_folder
from datamodules.sources import SOURCES, EmbeddedSource, Source
from datamodules.storage import Captions, FileCaptions, MappedArray


class FileClips:
    """Clips decoded from video files (PyAV) or frame folders: ``num_frames`` frames sampled
    uniformly, each resized to ``size`` x ``size``; a corrupt file raises ``MediaError``."""

    def __init__(self, files: FileCaptions, num_frames: int, size: int) -> None:
        self.files, self.num_frames, self.size = files, num_frames, size

    def __getitem__(self, i: int) -> np.ndarray:
        path = Path(self.files.path(i))
        read = read_frame_folder if path.is_dir() else decode_video
        return read(path, self.num_frames, self.size)


@dataclass(frozen=True)
class VideoTextSplit:
    """A split as the datamodule reads it: captions, clips ``[T, S, S, 3]`` by item id, class
    ids by label and each clip's hard-negative sibling (-1: none)."""

    captions: Captions
    clips: MappedArray | FileClips
    siblings: np.ndarray
    labels: Mapping[str, np.ndarray] = field(default_factory=dict)


class VideoTextSource(Source[VideoTextSplit]):
    """What every video-text source says beyond its splits: zero-shot prompts (none on disk)."""

    def zero_shot_tasks(self) -> dict[str, list[str]]:
        return {}


@SOURCES.register("video_text", "embedded")
class EmbeddedMovingShapes(EmbeddedSource[VideoTextSplit], VideoTextSource):
    """The built-in moving-shapes clips: labels direction, shape and colour."""

    name = "moving_shapes"
    ensure = staticmethod(ensure_moving_shapes)

    @staticmethod
    def generator_of(cfg: Any) -> MovingShapesConfig:
        return MovingShapesConfig(
            num_train=cfg.num_train,
            num_val=cfg.num_val,
            num_test=cfg.num_test,
            num_frames=cfg.num_frames,
            frame_size=cfg.frame_size,
            sibling_fraction=cfg.sibling_fraction,
            seed=cfg.seed,
        )

    def zero_shot_tasks(self) -> dict[str, list[str]]:
        return zero_shot_prompts()

    def _split(self, split: str) -> VideoTextSplit:
        directory = self.directory()
        data = load_split(directory, split)
        clips = MappedArray(directory / f"{split}_frames.npy")
        return VideoTextSplit(Captions.from_lists(data.captions), clips, data.sibling, data.labels)


class ManifestVideoText(VideoTextSource):
    """Clips listed in a manifest (``<split>_manifest``, default ``default_manifest``), their
    paths relative to ``<split>_videos``."""

    default_manifest = ""

    def manifest(self, split: str) -> Path:
        name = getattr(self.cfg, f"{split}_manifest") or self.default_manifest.format(split=split)
        return Path(self.cfg.root or "") / name

    def _read(self, split: str, manifest: Path, video_dir: Path) -> FileCaptions:
        raise NotImplementedError

    def _split(self, split: str) -> VideoTextSplit:
        video_dir = self.root() / getattr(self.cfg, f"{split}_videos")
        files = self._read(split, self.manifest(split), video_dir)
        clips = FileClips(files, self.cfg.num_frames, self.cfg.frame_size)
        siblings = np.full(files.captions.num_items, -1, np.int64)
        return VideoTextSplit(files.captions, clips, siblings)


@SOURCES.register("video_text", "msrvtt")
class MsrvttVideoText(ManifestVideoText):
    """MSR-VTT: one JSON file of every split, filtered by the videos' ``split`` field."""

    default_manifest = "msrvtt.json"

    def _read(self, split: str, manifest: Path, video_dir: Path) -> FileCaptions:
        return read_msrvtt(manifest, video_dir, split)


@SOURCES.register("video_text", "csv")
class CsvVideoText(ManifestVideoText):
    """One CSV file per split (``<split>.csv``)."""

    default_manifest = "{split}.csv"

    def _read(self, split: str, manifest: Path, video_dir: Path) -> FileCaptions:
        return read_video_csv(manifest, video_dir)
