"""Cross-lingual token tagging (zero-resource cross-lingual NER): sentences with a BIO tag per
word in a labelled source language and a target language whose training text is unlabelled.
The built-in tagged captions (datamodules/embedded/tagged_captions.py) or CoNLL NER files on
disk (``data.format: conll``, ``data.root``; datamodules/sources/tagged_captions.py).

One modality, ``text``. Batches: ``text_ids`` / ``text_mask`` [B, L] (the word-level tokenizer's
ids, ``<cls>`` first), ``tags`` long [B, L] aligned to those tokens (the word's tag id on the
first token of each word; -2 there for every target word of the training split, whose tags are
hidden; -1 on ``<cls>``, padding, a word's further tokens and words cut off by
``max_text_len``), ``word_tags`` long [B, W] (every word's tag, the words cut off by
``max_text_len`` included, -1 after the sentence's last word: the entity F1 counts the gold
entities of cut words as missed), ``label/language`` long [B] (0: source, 1: target),
``index`` / ``item_id`` (the sentence). Training batches draw from the source and target
training sentences together (``language`` tells them apart); validation and test hold both
languages, labelled. The tag names (``class_names["tags"]``) tell a method how many classes to
predict.

Tags are aligned by the tokenizer's own splitting rule (``modules.words.split_words``): a CoNLL
token such as ``U.S.`` is several word-level tokens, and only its first carries the tag (the
first-sub-token convention of BERT taggers). The only evaluation is the one a tagging method
asks for (``token_f1``: entity F1 per language, callbacks/token_f1.py).
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset

import datamodules.sources.tagged_captions  # noqa: F401  (registers the family's sources)
from datamodules.base import SplitsDataModule
from datamodules.config import SourceDataConfig
from datamodules.pairs import TokenizeCollate
from datamodules.sources.tagged_captions import NO_TAG, TaggedSplit
from modules.registry import DATAMODULES
from modules.words import split_words


@dataclass
class TaggedCaptionsDataConfig(SourceDataConfig):
    """Split sizes are per language; ``shared_words``: the fraction of words the target keeps
    from the source (built-in data); ``source_language`` / ``target_language``: the folders
    under ``data.root`` (``conll``)."""

    family: ClassVar[str] = "tagged_captions"

    name: str = "tagged_captions"
    num_train: int = 4000
    num_val: int = 500
    num_test: int = 1000
    shared_words: float = 0.5
    max_text_len: int = 48
    source_language: str = "source"
    target_language: str = "target"

    def __post_init__(self) -> None:
        if self.max_text_len < 2:
            raise ValueError(f"data.max_text_len must be at least 2, got {self.max_text_len}")
        super().__post_init__()


class TaggedDataset(Dataset):
    """Sentence ``i``: its words and tag ids, its language, its index."""

    def __init__(self, data: TaggedSplit) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "words": self.data.words[i],
            "tags": self.data.tags[i],
            "label/language": int(self.data.language[i]),
            "index": i,
            "item_id": i,
        }


def align_tags(
    words: list[tuple[str, ...]], tags: list[list[int]], shape: torch.Size
) -> torch.Tensor:
    """Tag ids [B, L] on the tokens of ``" ".join(words[b])`` (``<cls>`` at 0): each word's tag
    on its first token (``split_words`` of the word), -1 elsewhere and past ``L``."""
    out = torch.full(shape, NO_TAG, dtype=torch.long)
    for b, (sentence, sentence_tags) in enumerate(zip(words, tags, strict=True)):
        position = 1
        for word, tag in zip(sentence, sentence_tags, strict=True):
            if position >= shape[1]:
                break
            out[b, position] = tag
            position += len(split_words(word))
    return out


def word_tags(tags: list[list[int]]) -> torch.Tensor:
    """Every word's tag id [B, W] (W the longest sentence), -1 after a sentence's end."""
    out = torch.full((len(tags), max((len(t) for t in tags), default=0)), NO_TAG)
    for b, sentence_tags in enumerate(tags):
        out[b, : len(sentence_tags)] = torch.tensor(sentence_tags, dtype=torch.long)
    return out


class TaggedCollate(TokenizeCollate):
    """Words joined into ``text`` and tokenized; ``tags`` aligned to the tokens."""

    def __call__(self, samples: list[dict]) -> dict[str, Any]:
        words = [s["words"] for s in samples]
        tags = [s["tags"] for s in samples]
        rest = [
            {
                "text": " ".join(s["words"]),
                **{k: v for k, v in s.items() if k not in ("words", "tags")},
            }
            for s in samples
        ]
        batch = super().__call__(rest)
        batch["tags"] = align_tags(words, tags, batch["text_ids"].shape)
        batch["word_tags"] = word_tags(tags)
        return batch


@DATAMODULES.register("tagged_captions", TaggedCaptionsDataConfig)
class TaggedCaptionsDataModule(SplitsDataModule):
    """Source and target sentences with BIO tags (see the module docstring)."""

    name = "tagged_captions"
    modalities = ("text",)

    @property
    def class_names(self) -> dict[str, list[str]]:
        return {"tags": list(self.source.tag_names())}

    #: Language ids of ``label/language``, in order.
    language_names: ClassVar[tuple[str, str]] = ("source", "target")

    def tower_context(self) -> dict[str, Any]:
        return {"max_text_len": self.cfg.max_text_len}

    def num_items(self, split: str) -> int:
        return len(self.source.split(split))

    def training_texts(self) -> list[str]:
        """Every training sentence of both languages (the target's text is unlabelled, not
        unseen: the vocabulary covers it, as a multilingual encoder's does)."""
        return [" ".join(words) for words in self.source.split("train").words]

    def _dataset(self, split: str) -> TaggedDataset:
        return TaggedDataset(self.source.split(split))

    def _collate_with(self, tokenizer: Any, train: bool) -> TaggedCollate:
        if tokenizer.state().get("kind") != "word":
            # the tags are aligned by split_words; a sub-word tokenizer needs its word offsets
            raise ValueError(
                "data.name tagged_captions aligns tags to the word-level tokenizer: use "
                "model.text.name: transformer"
            )
        return TaggedCollate(tokenizer)
