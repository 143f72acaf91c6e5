"""Built-in cross-lingual token tagging: the shapes captions with entity tags per word, in a
labelled source language and an unlabelled target language (zero-resource cross-lingual NER
in miniature, for ProKD: methods/part1.md section 6).

Sentences are the captions of :mod:`datamodules.embedded.shapes` (same templates, synonyms and
scenes; no image is rendered). Each word gets a BIO tag of six entity types, read off the
caption by :func:`tag_words`:

- ``COLOR`` (red, green, ...), ``SHAPE`` (circle, square, ...), ``SIZE`` (small, tiny, big ...),
  ``COUNT`` (one, two, three, single);
- ``POSITION``: a run of grid words (``top left``, ``centre``, ``bottom``) that is not a relation;
- ``RELATION``: ``left of`` / ``right of`` (two words), ``above``, ``over``, ``below``,
  ``under``, ``higher than``, ``lower than``.

The target language is language 1 of :class:`~datamodules.languages.SyntheticLanguages` (word
``w`` becomes the token ``wq1``) for all but a ``shared_words`` fraction of the words, chosen
by a hash of the word: those keep their surface, like cognates, names and numbers that
multilingual encoders share between languages. The class structure is the same in both
languages (same templates, word order and tags), the surface differs: a tagger trained on the
source knows the shared words and the contexts, not the target's own words, so it transfers
imperfectly (direct transfer), and unlabelled target text can teach it the rest.

Splits: ``num_train`` source sentences (labelled) and ``num_train`` target sentences (their
tags are written, but the training split hides them: zero-resource) drawn from *different*
scenes (the two training sets are not parallel); ``num_val`` / ``num_test`` sentences per
language, labelled. Written once as CoNLL files ``<dir>/<language>/<split>.txt`` (languages
``source`` and ``target``; :mod:`datamodules.formats.conll`), the layout the ``conll`` format
reads from ``data.root``.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from datamodules.embedded.cache import config_key, write_once
from datamodules.embedded.shapes import COLORS, COUNT_WORDS, SHAPES, SPLITS, Obj, captions
from datamodules.formats.conll import TaggedSentence, write_conll
from datamodules.languages import SyntheticLanguages
from modules.words import split_words

GENERATOR_VERSION = 1
#: The two languages, in language-id order, and their folders.
LANGUAGES = ("source", "target")
_SIZE_WORDS = frozenset({"small", "little", "tiny", "large", "big"})
_GRID_WORDS = frozenset({"top", "middle", "bottom", "left", "centre", "right"})
_ONE_WORD_RELATIONS = frozenset({"above", "over", "below", "under"})
_TWO_WORD_RELATIONS = {("higher", "than"), ("lower", "than"), ("left", "of"), ("right", "of")}
_WORD_TYPES = {
    **{w: "COLOR" for w in COLORS},
    **{w: "SHAPE" for w in SHAPES},
    **{w: "SIZE" for w in _SIZE_WORDS},
    **{w: "COUNT" for w in (*COUNT_WORDS, "single")},
}


@dataclass(frozen=True)
class TaggedCaptionsConfig:
    """Generator parameters; their hash names the cache directory. Sizes are per language."""

    num_train: int = 4000
    num_val: int = 500
    num_test: int = 1000
    shared_words: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.num_train, self.num_val, self.num_test) < 1:
            raise ValueError("num_train, num_val and num_test must be at least 1")
        if not 0.0 <= self.shared_words <= 1.0:
            raise ValueError(f"shared_words must be in [0, 1], got {self.shared_words}")

    def num(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]

    def key(self) -> str:
        return config_key(self, GENERATOR_VERSION)


def tag_words(words: list[str]) -> list[str]:
    """BIO tags of a caption's words (``split_words`` of a shapes caption)."""
    tags = ["O"] * len(words)
    i = 0
    while i < len(words):
        word, following = words[i], words[i + 1] if i + 1 < len(words) else ""
        if (word, following) in _TWO_WORD_RELATIONS:
            tags[i : i + 2] = ["B-RELATION", "I-RELATION"]
            i += 2
        elif word in _ONE_WORD_RELATIONS:
            tags[i] = "B-RELATION"
            i += 1
        elif word in _GRID_WORDS:
            start = i
            while i < len(words) and words[i] in _GRID_WORDS:
                i += 1
            tags[start:i] = ["B-POSITION"] + ["I-POSITION"] * (i - start - 1)
        else:
            if word in _WORD_TYPES:
                tags[i] = f"B-{_WORD_TYPES[word]}"
            i += 1
    return tags


def is_shared(word: str, fraction: float) -> bool:
    """Whether ``word`` keeps its surface in the target language (a hash of the word, so the
    same words are shared in every split and run)."""
    return zlib.crc32(word.encode()) % 1000 < round(1000 * fraction)


def to_target(words: list[str], fraction: float) -> list[str]:
    """``words`` in the target language: language 1 of the synthetic languages, except the
    shared words."""
    languages = SyntheticLanguages(2)
    return [w if is_shared(w, fraction) else languages.word(w, 1) for w in words]


def _scene(py: random.Random) -> list[Obj]:
    """1-3 objects with distinct (shape, colour) in distinct cells; the first one large when
    there are several (as in the shapes scenes). Pixel centres are not used by captions."""
    n = py.choice((1, 2, 3))
    attrs: set[tuple[str, str]] = set()
    while len(attrs) < n:
        attrs.add((py.choice(SHAPES), py.choice(list(COLORS))))
    sizes = [py.choice(("small", "large"))] if n == 1 else ["large"] + ["small"] * (n - 1)
    cells = py.sample(range(9), n)
    return [
        Obj(shape, color, size, cell // 3, cell % 3, 0, 0)
        for (shape, color), size, cell in zip(sorted(attrs), sizes, cells, strict=True)
    ]


def generate(cfg: TaggedCaptionsConfig, split: str, language: int) -> list[TaggedSentence]:
    """``cfg.num(split)`` tagged sentences of one language (scenes drawn per language)."""
    py = random.Random(f"{cfg.seed}-{split}-{language}")
    out = []
    for _ in range(cfg.num(split)):
        caption = py.choice(captions(_scene(py), py.getrandbits(62)))
        words = split_words(caption)
        tags = tag_words(words)
        if language == 1:
            words = to_target(words, cfg.shared_words)
        out.append(TaggedSentence(tuple(words), tuple(tags)))
    return out


def tagged_captions_dir(cfg: TaggedCaptionsConfig, cache_root: Path) -> Path:
    return Path(cache_root) / "data" / f"tagged-captions-{cfg.key()}"


def ensure_tagged_captions(cfg: TaggedCaptionsConfig, cache_root: Path) -> Path:
    """The cache directory of ``cfg``, written first if absent (atomically)."""
    return write_once(tagged_captions_dir(cfg, cache_root), partial(_write, cfg))


def _write(cfg: TaggedCaptionsConfig, directory: Path) -> None:
    for language, name in enumerate(LANGUAGES):
        (directory / name).mkdir()
        for split in SPLITS:
            write_conll(directory / name / f"{split}.txt", generate(cfg, split, language))
