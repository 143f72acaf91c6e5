"""Sources of the ``tagged_captions`` family (cross-lingual token tagging): the built-in tagged
captions and CoNLL NER files on disk (``data.format: conll``), both read with
:func:`~datamodules.formats.conll.read_conll` from ``<dir>/<language>/<split>.txt``:

- ``embedded``: the generator's cache directory, languages ``source`` and ``target``;
- ``conll``: ``data.root``, languages ``data.source_language`` / ``data.target_language``
  (e.g. ``en`` and ``de`` folders holding CoNLL-2003's English and German splits, renamed
  ``train.txt``, ``val.txt`` (testa), ``test.txt`` (testb)).

Each split is handed over as a :class:`TaggedSplit`: the source sentences then the target
sentences, tag ids per word, the language of each sentence. The training split hides the
target's tags (-2 for every word: zero-resource, the target text is unlabelled in training).
Tag ids: ``O`` first, then ``B-<type>``, ``I-<type>`` for the entity types of every file, sorted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.embedded.tagged_captions import (
    LANGUAGES,
    TaggedCaptionsConfig,
    ensure_tagged_captions,
)
from datamodules.formats.conll import TaggedSentence, read_conll
from datamodules.sources import SOURCES, EmbeddedSource, Source
from datamodules.storage import SPLITS

#: ``tags`` of a token that carries no word's tag (``<cls>``, padding, a word's further tokens).
NO_TAG = -1
#: ``tags`` of a word whose tag is hidden (the target's training words: zero-resource).
HIDDEN_TAG = -2


@dataclass(frozen=True)
class TaggedSplit:
    """One split: ``words[i]`` and ``tags[i]`` (tag ids, -2: hidden) of sentence ``i``, its
    ``language`` (0: source, 1: target)."""

    words: list[tuple[str, ...]]
    tags: list[list[int]]
    language: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.words)


def tag_names(sentences: list[TaggedSentence]) -> list[str]:
    """``O``, then ``B-`` and ``I-`` of every entity type in ``sentences``, types sorted."""
    types = sorted({tag[2:] for s in sentences for tag in s.tags if tag != "O"})
    return ["O", *(f"{prefix}-{t}" for t in types for prefix in ("B", "I"))]


class TaggedSource(Source[TaggedSplit]):
    """Two languages of CoNLL files under :meth:`folder`; the subclasses name the folder and
    the two languages' sub-folders."""

    def folder(self) -> Path:
        raise NotImplementedError

    def languages(self) -> tuple[str, str]:
        raise NotImplementedError

    def _read(self, split: str) -> list[list[TaggedSentence]]:
        """The sentences of ``split`` per language (source, target)."""
        return [read_conll(self.folder() / lang / f"{split}.txt") for lang in self.languages()]

    def tag_names(self) -> list[str]:
        """Tag names in id order, from every split of both languages."""
        if not hasattr(self, "_tag_names"):
            every = [s for split in SPLITS for lang in self._read(split) for s in lang]
            self._tag_names = tag_names(every)
        return self._tag_names

    def _split(self, split: str) -> TaggedSplit:
        ids = {name: i for i, name in enumerate(self.tag_names())}
        words, tags, language = [], [], []
        for k, sentences in enumerate(self._read(split)):
            hidden = split == "train" and k == 1
            for s in sentences:
                words.append(s.words)
                tags.append([HIDDEN_TAG if hidden else ids[t] for t in s.tags])
                language.append(k)
        return TaggedSplit(words, tags, np.asarray(language, dtype=np.int64))


@SOURCES.register("tagged_captions", "embedded")
class EmbeddedTaggedCaptions(EmbeddedSource[TaggedSplit], TaggedSource):
    """The built-in tagged captions (datamodules/embedded/tagged_captions.py)."""

    name = "tagged-captions"
    ensure = staticmethod(ensure_tagged_captions)

    @staticmethod
    def generator_of(cfg: Any) -> TaggedCaptionsConfig:
        return TaggedCaptionsConfig(
            num_train=cfg.num_train,
            num_val=cfg.num_val,
            num_test=cfg.num_test,
            shared_words=cfg.shared_words,
            seed=cfg.seed,
        )

    def folder(self) -> Path:
        return self.directory()

    def languages(self) -> tuple[str, str]:
        return LANGUAGES[0], LANGUAGES[1]


@SOURCES.register("tagged_captions", "conll")
class CoNLLFiles(TaggedSource):
    """CoNLL NER files under ``data.root``: ``<language>/{train,val,test}.txt``."""

    def folder(self) -> Path:
        return self.root()

    def languages(self) -> tuple[str, str]:
        return self.cfg.source_language, self.cfg.target_language
