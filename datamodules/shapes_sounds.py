"""Three modalities of the built-in shapes scenes: image, sound and caption (for GRAM and other
methods that align more than two modalities).

Each scene of ``image_text``'s built-in data (same ``num_*``, ``image_size``,
``hard_negative_fraction``, ``seed``: one cache directory) also sounds as one beep per object
(datamodules/embedded/shape_sounds.py: the shape sets the pitch, the colour the timbre, the
size the duration, the row a glide, the column the envelope; the count is the number of beeps).

Batches: ``image`` float32 [B, 3, S, S] in [-1, 1] (``augment.train`` in training,
``augment.eval`` otherwise), ``audio`` float32 [B, n_mels, audio_frames] (log-mel),
``text_ids`` / ``text_mask`` [B, L]: one of the scene's five captions, drawn afresh for every
training sample (as ``image_text``'s ``train_pairs: image``); evaluation has one sample per
scene with its first caption, so retrieval is scored 1:1 over scenes. ``label/shape``,
``label/color``, ``label/count`` as in ``image_text``. Modalities ("image", "audio", "text"):
text last, so it can be GRAM's anchor; retrieval is evaluated on all three pairs.
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

from dataclasses import dataclass
from typing import Any, ClassVar

from datamodules.embedded.shape_sounds import SoundsConfig
from datamodules.embedded.shapes import zero_shot_prompts
from datamodules.items import (
    ItemsDataConfig,
    ItemsDataModule,
    SeededImageTransform,
    Transform,
    as_float,
)
from datamodules.shapes_views import SHAPES_LABELS
from datamodules.sources.shapes import scenes_of
from modules.registry import DATAMODULES


@dataclass
class ShapesSoundsDataConfig(ItemsDataConfig):
    """The scenes' fields, the text length and the log-mel parameters (the audio lasts
    ``win_length + (audio_frames - 1) * hop_length`` samples, at least 0.8 s)."""

    family: ClassVar[str] = "shapes_sounds"

    name: str = "shapes_sounds"
    hard_negative_fraction: float = 0.25
    max_text_len: int = 40
    sample_rate: int = 8000
    n_mels: int = 40
    win_length: int = 200  # samples; also the FFT size
    hop_length: int = 80
    audio_frames: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        self.sounds()

    def sounds(self) -> SoundsConfig:
        """The generator config of the scenes and their sounds (validated)."""
        return SoundsConfig(
            scenes=scenes_of(self),
            sample_rate=self.sample_rate,
            n_mels=self.n_mels,
            win_length=self.win_length,
            hop_length=self.hop_length,
            audio_frames=self.audio_frames,
        )


@DATAMODULES.register("shapes_sounds", ShapesSoundsDataConfig)
class ShapesSoundsDataModule(ItemsDataModule):
    """Image, sound and caption of each built-in shapes scene (generated on first use)."""

    name = "shapes_sounds"
    modalities = ("image", "audio", "text")
    pairs = (("image", "audio"), ("image", "text"), ("audio", "text"))

    def __init__(self, cfg: ShapesSoundsDataConfig | None = None, tokenizer: Any = None) -> None:
        super().__init__(cfg or ShapesSoundsDataConfig(), tokenizer)

    @property
    def labels(self) -> dict[str, int]:
        return dict(SHAPES_LABELS)

    @property
    def zero_shot_tasks(self) -> dict[str, list[str]]:
        return zero_shot_prompts()

    @property
    def class_retrieval_labels(self) -> tuple[str, ...]:
        return ("shape", "color")

    def tower_context(self) -> dict[str, Any]:
        return {
            "image_size": self.cfg.image_size,
            "in_channels": 3,
            "n_mels": self.cfg.n_mels,
            "audio_frames": self.cfg.audio_frames,
            "max_text_len": self.cfg.max_text_len,
        }

    def _transforms(self, train: bool) -> dict[str, Transform]:
        steps = self.cfg.augment.train if train else self.cfg.augment.eval
        return {"image": SeededImageTransform(steps), "audio": as_float}
