"""Encoders per modality, projection heads and the tokenizer; ``build_tower`` picks by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from modules.registry import TOWERS


@dataclass(frozen=True)
class TowerContext:
    """What a tower needs to know about the data it will see (from the datamodule's
    ``tower_context()``, plus the tokenizer's vocabulary size).

    ``image_size``/``in_channels`` describe images, or the frames of a video.
    """

    image_size: int = 64
    in_channels: int = 3
    num_frames: int = 8
    n_mels: int = 40
    audio_frames: int = 100
    vocab_size: int = 0
    max_text_len: int = 32


def build_tower(cfg: Any, embed_dim: int, context: TowerContext) -> nn.Module:
    """The tower registered under ``cfg.name``, projecting to ``embed_dim``."""
    entry = TOWERS.get(cfg.name)
    return entry.cls(cfg, embed_dim=embed_dim, context=context)
