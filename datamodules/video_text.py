"""Video-text pairs: the built-in moving-shapes clips, or an MSR-VTT / CSV dataset on disk.

Batches: ``video`` float32 [B, T, 3, S, S] in [-1, 1], ``text_ids`` / ``text_mask`` [B, L],
``index`` (caption id in the split), ``item_id`` (clip id in the split, shared by the captions
of one clip) and, for the built-in data, ``label/direction``, ``label/shape``, ``label/color``.
Evaluation batches also hold ``video_reversed`` (the clip played backwards) for the
``time_reversed`` choice metric. Training draws one caption per clip per epoch
(``train_pairs: image``) or uses every pair (``caption``); validation and test always iterate
over every pair in order.

``shuffle_frames`` is the time-shuffled ablation: each clip's frames are permuted, afresh per
draw in training (torch's RNG), and by a fixed permutation per clip in evaluation (from the
seed and the clip id), so evaluation is reproducible.
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from datamodules.config import SourceDataConfig
from datamodules.pairs import TRAIN_PAIRS, PairDataModule, PairDataset
from datamodules.sources.video_text import FileClips, VideoTextSource
from datamodules.storage import MappedArray
from datamodules.transforms import ClipTransform
from modules.registry import DATAMODULES


@dataclass
class VideoTextDataConfig(SourceDataConfig):
    """Data block of an experiment. ``num_*`` and ``sibling_fraction`` shape the built-in data;
    ``root``, ``*_manifest`` and ``*_videos`` locate a real one (the formats:
    datamodules/sources/video_text.py)."""

    family: ClassVar[str] = "video_text"

    name: str = "video_text"
    # manifest per split, relative to root; None: "msrvtt.json" (one file holding every
    # split, filtered by the videos' "split" field) or "<split>.csv"
    train_manifest: str | None = None
    val_manifest: str | None = None
    test_manifest: str | None = None
    # directory (relative to root) holding a split's clips (files or frame folders)
    train_videos: str = ""
    val_videos: str = ""
    test_videos: str = ""
    num_frames: int = 8
    frame_size: int = 32
    max_text_len: int = 40
    num_train: int = 4000
    num_val: int = 500
    num_test: int = 500
    sibling_fraction: float = 0.25
    train_pairs: str = "image"  # image: one random caption per clip per epoch | caption: all
    # train batches keep each hard-negative sibling pair together (needs train_pairs: image)
    sibling_batches: bool = False
    shuffle_frames: bool = False  # the time-shuffled ablation

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.train_pairs not in TRAIN_PAIRS:
            raise ValueError(f"data.train_pairs must be one of {TRAIN_PAIRS}")
        if self.sibling_batches and self.train_pairs != "image":
            raise ValueError("data.sibling_batches needs data.train_pairs: image")
        if self.num_frames < 1 or self.frame_size < 1:
            raise ValueError("data.num_frames and data.frame_size must be positive")


def eval_permutation(seed: int, item: int, num_frames: int) -> np.ndarray:
    """The fixed frame order of clip ``item`` in shuffled evaluation (never the identity when
    there are two frames or more)."""
    rng = np.random.default_rng([seed, item])
    while True:
        order = rng.permutation(num_frames)
        if num_frames < 2 or (order != np.arange(num_frames)).any():
            return order


class LoadClip:
    """Item id -> ``{"video": tensor}``: read, shuffle frames (ablation), augment, convert.

    With ``reversed_copy`` (evaluation) the sample also holds ``video_reversed``: the clip
    played backwards, under the same frame shuffle and augmentation draw, the wrong candidate
    of the ``time_reversed`` choice task.
    """

    def __init__(
        self,
        clips: MappedArray | FileClips,
        transform: ClipTransform,
        shuffle: str | None,
        seed: int,
        reversed_copy: bool = False,
    ) -> None:
        self.clips, self.transform, self.shuffle, self.seed = clips, transform, shuffle, seed
        self.reversed_copy = reversed_copy

    def __call__(self, item: int) -> dict[str, torch.Tensor]:
        frames = self.clips[item]
        order = np.arange(len(frames))
        if self.shuffle == "train":
            order = torch.randperm(len(frames)).numpy()
        elif self.shuffle == "eval":
            order = eval_permutation(self.seed, item, len(frames))
        if not self.reversed_copy:
            return {"video": self.transform(frames[order])}
        both = self.transform(np.concatenate([frames[order], frames[::-1][order]]))
        return {"video": both[: len(frames)], "video_reversed": both[len(frames) :]}


@DATAMODULES.register("video_text", VideoTextDataConfig)
class VideoTextDataModule(PairDataModule):
    """Clip-caption pairs; with no arguments, the built-in moving-shapes data (generated on
    first use into the cache)."""

    source: VideoTextSource

    def __init__(self, cfg: VideoTextDataConfig | None = None, tokenizer: Any = None) -> None:
        super().__init__(cfg or VideoTextDataConfig(), tokenizer)

    modalities = ("video", "text")

    def tower_context(self) -> dict[str, Any]:
        return {
            "image_size": self.cfg.frame_size,
            "in_channels": 3,
            "num_frames": self.cfg.num_frames,
            "max_text_len": self.cfg.max_text_len,
        }

    @property
    def zero_shot_tasks(self) -> dict[str, list[str]]:
        return self.source.zero_shot_tasks()

    @property
    def choice_tasks(self) -> dict[str, tuple[str, str]]:
        """``time_reversed``: does the caption prefer its clip over the same clip played
        backwards? A model blind to frame order cannot (its two embeddings are equal)."""
        return {"time_reversed": ("video_reversed", "video")}

    def describe(self) -> str:
        """One line for logs: source and loaded split sizes."""
        source = self.source.describe()
        if self.cfg.shuffle_frames:
            source += ", frames shuffled"
        sizes = ", ".join(
            f"{split} {ds.captions.num_items} clips / {len(ds.captions)} captions"
            for split, ds in self.datasets.items()
        )
        return f"video_text ({source}): {sizes or 'not set up'}"

    def _dataset(self, split: str) -> PairDataset:
        train = split == "train"
        transform = ClipTransform(self.cfg.augment.train if train else self.cfg.augment.eval)
        pairs = self.cfg.train_pairs if train else "caption"
        shuffle = ("train" if train else "eval") if self.cfg.shuffle_frames else None
        data = self.source.split(split)
        self._siblings[split] = data.siblings
        load = LoadClip(data.clips, transform, shuffle, self.cfg.seed, reversed_copy=not train)
        return PairDataset(data.captions, load, dict(data.labels), pairs)
