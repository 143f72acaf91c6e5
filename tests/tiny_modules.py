"""A tiny CLIP-style module for unit tests: 16-d towers on 16x16 images and 8-token texts."""

from __future__ import annotations

from typing import Any

import torch

from modules.base import DualTowerModule
from modules.clip import CLIP
from modules.towers.tokenizer import WordTokenizer

MODEL = {
    "embed_dim": 16,
    "image": {"name": "cnn", "channels": [8, 16]},
    "text": {"name": "transformer", "width": 16, "depth": 1, "heads": 2},
    "temperature": 0.07,
    "learnable_temperature": True,
    "max_logit_scale": 100.0,
}
OPTIM = {
    "lr": 1e-3,
    "weight_decay": 0.1,
    "betas": [0.9, 0.98],
    "eps": 1e-6,
    "warmup_steps": 2,
    "min_lr_ratio": 0.0,
}


def tiny_module(
    vocab: list[str],
    cls: type[DualTowerModule] = CLIP,
    method: dict[str, Any] | None = None,
    text: dict[str, Any] | None = None,
    **optim: Any,
) -> DualTowerModule:
    """``cls`` on image-text pairs; ``text`` overrides text-tower keys, ``optim`` optimiser keys."""
    return cls(
        method=method or {"name": "clip"},
        model={**MODEL, "text": {**MODEL["text"], **(text or {})}},
        optim={**OPTIM, **optim},
        tokenizer=word_state(vocab),
        context={"modalities": ["image", "text"], "image_size": 16, "max_text_len": 8},
    )


def word_state(vocab: list[str], max_len: int = 8) -> dict[str, Any]:
    """The checkpoint state of a word-level tokenizer over ``vocab`` (a method's
    ``tokenizer`` argument)."""
    return WordTokenizer(vocab, max_len=max_len).state()


def setup_with_words(datamodule: Any, stage: str | None = None) -> Any:
    """``datamodule.setup(stage)``, then the word-level tokenizer of its training captions (the
    text encoder's tokenizer, which experiments build from ``model.text``)."""
    datamodule.setup(stage)
    if datamodule.tokenizer is None and datamodule.needs_tokenizer:
        datamodule.tokenizer = WordTokenizer.build(
            datamodule.training_texts(), max_len=datamodule.cfg.max_text_len
        )
    return datamodule


def tiny_batch(
    vocab: list[str], captions: list[str], seed: int = 0, **extra: torch.Tensor
) -> dict[str, torch.Tensor]:
    """One batch for :func:`tiny_module`: random 16x16 images (seeded), ``captions`` tokenized,
    ``index`` = ``item_id`` = position, plus ``extra`` entries (e.g. ``label/shape``)."""
    ids, mask = WordTokenizer(vocab, max_len=8).encode(captions)
    size = len(captions)
    return {
        "image": torch.randn(size, 3, 16, 16, generator=torch.Generator().manual_seed(seed)),
        "text_ids": ids,
        "text_mask": mask,
        "index": torch.arange(size),
        "item_id": torch.arange(size),
        **extra,
    }
