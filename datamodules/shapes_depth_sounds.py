"""Four modalities of the built-in shapes scenes: image, depth map, sound and caption (for
LanguageBind and other methods that bind several modalities to one).

Each scene of ``shapes_sounds`` (same scenes, same sounds: the same cache directories) is also
seen by a depth camera (datamodules/embedded/shape_depth.py): one channel of nearness, every
object a flat silhouette at its own random nearness, no colour. So what each modality shows
differs: the image shows colours and shapes, the depth map shapes, sizes and places but no
colour, the sound everything but the pixel positions, the caption everything it says.

Batches: ``image`` float32 [B, 3, S, S] and ``depth`` float32 [B, 1, S, S] in [-1, 1]
(``augment.train`` in training, each its own draw; ``augment.eval`` otherwise), ``audio``
float32 [B, n_mels, audio_frames] (log-mel), ``text_ids`` / ``text_mask`` [B, L] as in
``shapes_sounds`` (a caption drawn per training sample, the first in evaluation).
``label/shape``, ``label/color``, ``label/count`` on the built-in data. Modalities ("image",
"depth", "audio", "text"): retrieval is evaluated on all six pairs.

``format: vidal`` reads VIDAL-10M manifests (datamodules/formats/vidal.py) under ``root``:
``train_manifest``, ``val_manifest``, ``test_manifest`` and the caption field ``text_type``;
no labels.
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

from dataclasses import dataclass
from itertools import combinations
from typing import Any, ClassVar

from datamodules.formats.vidal import TEXT_TYPES
from datamodules.items import SeededImageTransform, Transform
from datamodules.shapes_sounds import ShapesSoundsDataConfig, ShapesSoundsDataModule
from datamodules.sources import depth_sounds  # noqa: F401  (registers the family's sources)
from modules.registry import DATAMODULES

MODALITIES = ("image", "depth", "audio", "text")


@dataclass
class ShapesDepthSoundsDataConfig(ShapesSoundsDataConfig):
    """``shapes_sounds``' fields, and the VIDAL manifests (paths relative to ``root``) and
    caption field of ``format: vidal`` (the paper's depth runs: ``polish_mplug``)."""

    family: ClassVar[str] = "shapes_depth_sounds"

    name: str = "shapes_depth_sounds"
    train_manifest: str | None = None
    val_manifest: str | None = None
    test_manifest: str | None = None
    text_type: str = "polish_mplug"

    def __post_init__(self) -> None:
        if self.text_type not in TEXT_TYPES:
            raise ValueError(f"data.text_type must be one of {TEXT_TYPES}, got {self.text_type!r}")
        super().__post_init__()


@DATAMODULES.register("shapes_depth_sounds", ShapesDepthSoundsDataConfig)
class ShapesDepthSoundsDataModule(ShapesSoundsDataModule):
    """Image, depth map, sound and caption of each built-in shapes scene (generated on first
    use), or of each VIDAL entry."""

    name = "shapes_depth_sounds"
    modalities = MODALITIES
    pairs = tuple(combinations(MODALITIES, 2))

    def __init__(
        self, cfg: ShapesDepthSoundsDataConfig | None = None, tokenizer: Any = None
    ) -> None:
        super().__init__(cfg or ShapesDepthSoundsDataConfig(), tokenizer)

    @property
    def embedded(self) -> bool:
        return self.cfg.format == "embedded"

    @property
    def labels(self) -> dict[str, int]:
        return super().labels if self.embedded else {}

    @property
    def zero_shot_tasks(self) -> dict[str, list[str]]:
        return super().zero_shot_tasks if self.embedded else {}

    @property
    def class_retrieval_labels(self) -> tuple[str, ...]:
        return super().class_retrieval_labels if self.embedded else ()

    def _transforms(self, train: bool) -> dict[str, Transform]:
        steps = self.cfg.augment.train if train else self.cfg.augment.eval
        return {**super()._transforms(train), "depth": SeededImageTransform(steps)}
