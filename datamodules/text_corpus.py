"""Text-only data for language models: documents, one per item (``text``), nothing else.

Built-in (``format: embedded``): the shapes scenes of ``image_text`` without their images; a
document is a scene's five captions (paraphrases of one scene: different templates, word
orders and synonyms), each ended by ``" ."``: 42-154 tokens (words and punctuation), 85 on
average, so the default ``max_text_len`` of 64 keeps the first three or four. A prefix names the
scene's objects, so a continuation can be checked for staying on them (coherence) and for
repeating itself (rep-n). On disk (``format: text_lines``): ``data.train_file``, ``val_file``,
``test_file`` under ``data.root``, UTF-8, one document per line
(datamodules/formats/text_lines.py), so a researcher can train on their own text.

Batches: ``text_ids`` / ``text_mask`` (the text encoder's tokenizer; documents longer than
``data.max_text_len`` tokens are truncated), ``index`` and ``item_id`` (the document).
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

from dataclasses import dataclass
from typing import Any, ClassVar

from datamodules.items import ItemsDataConfig, ItemsDataModule, Transform
from datamodules.sources import text_corpus as _sources  # noqa: F401  (registers the sources)
from modules.registry import DATAMODULES


@dataclass
class TextCorpusDataConfig(ItemsDataConfig):
    """``max_text_len``: tokens per document (``<cls>`` included); ``hard_negative_fraction``
    and ``image_size``: the built-in scenes' (their images are not read); ``*_file``: the
    ``text_lines`` files under ``root``."""

    family: ClassVar[str] = "text_corpus"

    name: str = "text_corpus"
    max_text_len: int = 64
    hard_negative_fraction: float = 0.25
    train_file: str = "train.txt"
    val_file: str = "val.txt"
    test_file: str = "test.txt"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_text_len < 2:
            raise ValueError(f"data.max_text_len must be at least 2, got {self.max_text_len}")


@DATAMODULES.register("text_corpus", TextCorpusDataConfig)
class TextCorpusDataModule(ItemsDataModule):
    """Documents as ``text``, one sample per document."""

    name = "text_corpus"
    modalities = ("text",)

    def tower_context(self) -> dict[str, Any]:
        return {"max_text_len": self.cfg.max_text_len}

    def _transforms(self, train: bool) -> dict[str, Transform]:
        return {}
