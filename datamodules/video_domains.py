"""Video domain adaptation: labelled source clips and unlabelled target clips (CoMix).

The built-in data (datamodules/embedded/video_domains.py): six moving-shapes actions that need
time (move left / right / up / down, appear, disappear) on a dark grey background (source) and
a bright striped colour background (target); or the UCF-HMDB / Jester split lists on disk
(``data.format: da_list``, datamodules/formats/da_lists.py).

Batches: training ``video`` (a source clip) float32 [B, T, 3, S, S] in [-1, 1],
``label/action`` (its class), ``target_video`` (an unlabelled target clip, same shape);
validation and test ``video`` (a target clip) and ``label/action`` (its class), so every
evaluator scores the target domain. ``index`` and ``item_id``: the item. One modality, one
encoder (``video``).
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from datamodules.embedded.video_domains import ACTIONS
from datamodules.items import ItemsDataConfig, ItemsDataModule, Transform
from datamodules.sources import video_domains as _sources  # noqa: F401  (registers the sources)
from datamodules.transforms import ClipTransform
from modules.registry import DATAMODULES


@dataclass
class VideoDomainsDataConfig(ItemsDataConfig):
    """``num_*``, ``num_frames``, ``frame_size``: the built-in data's size (``frame_size`` also
    the size real videos are resized to); ``source_list`` ... ``test_list``, ``videos`` and
    ``class_names``: the ``da_list`` format (paths relative to ``data.root``)."""

    family: ClassVar[str] = "video_domains"

    name: str = "video_domains"
    num_train: int = 4000
    num_val: int = 500
    num_test: int = 500
    num_frames: int = 8
    frame_size: int = 32
    source_list: str = ""
    target_list: str = ""
    val_list: str = ""
    test_list: str = ""
    videos: str = ""
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_frames < 1 or self.frame_size < 1:
            raise ValueError("data.num_frames and data.frame_size must be positive")


class SeededClipTransform:
    """:class:`~datamodules.transforms.ClipTransform` with the items families' ``(raw, seed)``
    signature: one augmentation draw for every frame of a clip, seeded per sample."""

    def __init__(self, steps: Any) -> None:
        self.transform = ClipTransform(steps)

    def __call__(self, frames: np.ndarray, seed: int | None = None) -> torch.Tensor:
        if seed is not None and self.transform.pipeline is not None:
            self.transform.pipeline.set_random_seed(seed)
        return self.transform(frames)


@DATAMODULES.register("video_domains", VideoDomainsDataConfig)
class VideoDomainsDataModule(ItemsDataModule):
    """Source clips with labels and target clips without, for training; target clips with
    labels for validation and test (generated on first use for the built-in data)."""

    name = "video_domains"
    modalities = ("video",)

    def __init__(self, cfg: VideoDomainsDataConfig | None = None, tokenizer: Any = None) -> None:
        super().__init__(cfg or VideoDomainsDataConfig(), tokenizer)

    @property
    def class_names(self) -> dict[str, list[str]]:
        return {"action": list(self.cfg.class_names or ACTIONS)}

    def tower_context(self) -> dict[str, Any]:
        return {
            "image_size": self.cfg.frame_size,
            "in_channels": 3,
            "num_frames": self.cfg.num_frames,
        }

    def _transforms(self, train: bool) -> dict[str, Transform]:
        steps = self.cfg.augment.train if train else self.cfg.augment.eval
        clips = SeededClipTransform(steps)
        return {"video": clips, "target_video": clips} if train else {"video": clips}
