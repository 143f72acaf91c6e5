"""Referring segmentation with text and spoken expressions (EPCFormer and other grounding
methods): each item is a scene, an expression that refers to one of its objects, said twice
(as text and as speech), and the object's mask.

Built-in data: datamodules/embedded/referring.py (four shapes per scene sharing attributes with
the referred one, so every word of the expression is needed; speech synthesised from the
talking data's word sounds, harder than the text). On disk: Ref-YouTube-VOS-style annotations
with A-VOS audio (``format: ref_youtube_vos``, datamodules/formats/ref_youtube_vos.py).

Batches: ``image`` float32 [B, 3, S, S] in [-1, 1], ``mask`` float32 [B, S, S] in {0, 1} (the
referred object), ``audio`` float32 [B, n_mels, audio_frames] (log-mel), ``text_ids`` /
``text_mask`` [B, L] (the expression), ``label/expression`` (items with equal ids say the same
thing). No augmentation: a flip would change what "left" refers to, and the mask would have to
follow. Modalities ("image", "audio", "text"); retrieval is evaluated between the two
expressions (audio <-> text), the grounding by the method's evaluator.
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

from dataclasses import dataclass
from typing import Any, ClassVar

import datamodules.sources.referring  # noqa: F401  (registers the family's sources)
from datamodules.embedded.referring import ReferringConfig
from datamodules.items import (
    ItemsDataConfig,
    ItemsDataModule,
    SeededImageTransform,
    Transform,
    as_float,
)
from modules.registry import DATAMODULES


@dataclass
class ReferringShapesDataConfig(ItemsDataConfig):
    """The built-in scenes' and speech's fields (:class:`ReferringConfig`), the text length
    and the log-mel parameters (used for audio on disk too)."""

    family: ClassVar[str] = "referring_shapes"

    name: str = "referring_shapes"
    image_size: int = 48
    object_size: float = 9.0
    num_speakers: int = 8
    noise: float = 0.3
    max_text_len: int = 16
    sample_rate: int = 8000
    n_mels: int = 40
    win_length: int = 200
    hop_length: int = 80
    audio_frames: int = 120

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.augment.train or self.augment.eval:
            raise ValueError("data.augment: referring_shapes takes no augmentation (see docs)")
        if self.format == "embedded":
            self.generator()

    def generator(self) -> ReferringConfig:
        """The built-in generator's config (validated)."""
        return ReferringConfig(
            num_train=self.num_train,
            num_val=self.num_val,
            num_test=self.num_test,
            image_size=self.image_size,
            object_size=self.object_size,
            num_speakers=self.num_speakers,
            noise=self.noise,
            sample_rate=self.sample_rate,
            n_mels=self.n_mels,
            win_length=self.win_length,
            hop_length=self.hop_length,
            audio_frames=self.audio_frames,
            seed=self.seed,
        )


@DATAMODULES.register("referring_shapes", ReferringShapesDataConfig)
class ReferringShapesDataModule(ItemsDataModule):
    """Image, mask, spoken and written expression of each referred object."""

    name = "referring_shapes"
    modalities = ("image", "audio", "text")
    pairs = (("audio", "text"),)

    def __init__(self, cfg: ReferringShapesDataConfig | None = None, tokenizer: Any = None) -> None:
        super().__init__(cfg or ReferringShapesDataConfig(), tokenizer)

    def tower_context(self) -> dict[str, Any]:
        return {
            "image_size": self.cfg.image_size,
            "in_channels": 3,
            "n_mels": self.cfg.n_mels,
            "audio_frames": self.cfg.audio_frames,
            "max_text_len": self.cfg.max_text_len,
        }

    def _transforms(self, train: bool) -> dict[str, Transform]:
        return {"image": SeededImageTransform(None), "mask": as_float, "audio": as_float}
