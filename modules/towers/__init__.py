"""Encoders per modality, projection heads and the tokenizers; ``build_tower`` picks by name,
``build_tokenizer`` asks the text tower of that name for its tokenizer."""

from __future__ import annotations

from dataclasses import dataclass, is_dataclass
from typing import Any

from torch import nn

from modules.registry import TOWERS, as_dataclass
from modules.towers.tokenizer import TextTokenizer


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
    num_words: int = 0  # word-embedding tables: the data's word vocabulary (word_corpora)


def build_tower(cfg: Any, embed_dim: int, context: TowerContext) -> nn.Module:
    """The tower registered under ``cfg.name``, projecting to ``embed_dim``."""
    entry = TOWERS.get(cfg.name)
    return entry.cls(cfg, embed_dim=embed_dim, context=context)


def build_tokenizer(
    cfg: Any, texts: list[str] | None, max_len: int, state: dict[str, Any] | None = None
) -> TextTokenizer:
    """The tokenizer owned by the text tower ``cfg`` (its config block: a dataclass or a
    mapping with ``name``): rebuilt from ``state`` (a checkpoint's ``tokenizer.state()``) when
    given, else built from ``texts`` (the training captions; towers with a fixed vocabulary
    ignore them). ``max_len``: the data's ``max_text_len``."""
    name = cfg.name if is_dataclass(cfg) else cfg["name"]
    entry = TOWERS.get(name)
    if getattr(entry.cls, "modality", None) != "text":
        raise ValueError(f"tower {name!r} is not a text tower: it has no tokenizer")
    if not is_dataclass(cfg):
        cfg = as_dataclass(entry.config, cfg)
    return entry.cls.build_tokenizer(cfg, texts, max_len, state)
