"""CoNLL-2003 NER files: one token a line (``token ... tag``: the first column is the word, the
last its tag; CoNLL-2003's POS and chunk columns between them are ignored), a blank line between
sentences, ``-DOCSTART-`` lines between documents. Tags are ``O``, ``B-<type>`` or ``I-<type>``
(IOB2, or CoNLL-2003's original IOB1 where ``I-`` may open an entity: the entity F1 of
callbacks/token_f1.py reads both, as seqeval and conlleval do).

:func:`read_conll` returns the sentences; a line without a tag or with a malformed tag is a
one-line :class:`~datamodules.errors.DataError` naming ``file:line``. :func:`write_conll` writes
the same format (the built-in generator stores its splits with it, so one reader serves both).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from datamodules.errors import DataError, DataFileMissing, utf8_text

DOCSTART = "-DOCSTART-"
_TAG = re.compile(r"O|[BI]-\S+")


@dataclass(frozen=True)
class TaggedSentence:
    """One sentence: its words and one tag per word."""

    words: tuple[str, ...]
    tags: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.words) != len(self.tags):
            raise ValueError(f"{len(self.words)} words but {len(self.tags)} tags")


def read_conll(path: str | Path) -> list[TaggedSentence]:
    """The sentences of a CoNLL NER file, in order (documents are not kept apart)."""
    path = Path(path)
    if not path.is_file():
        raise DataFileMissing(f"{path}: CoNLL file not found")
    with utf8_text(path):
        lines = path.read_text(encoding="utf-8").splitlines()
    sentences: list[TaggedSentence] = []
    words: list[str] = []
    tags: list[str] = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or fields[0] == DOCSTART:
            if words:
                sentences.append(TaggedSentence(tuple(words), tuple(tags)))
                words, tags = [], []
            continue
        if len(fields) < 2:
            raise DataError(f"{path}:{number}: expected 'token ... tag', got {line.strip()!r}")
        if not _TAG.fullmatch(fields[-1]):
            raise DataError(f"{path}:{number}: tag {fields[-1]!r} is not O, B-<type> or I-<type>")
        words.append(fields[0])
        tags.append(fields[-1])
    if words:
        sentences.append(TaggedSentence(tuple(words), tuple(tags)))
    if not sentences:
        raise DataError(f"{path}: no tagged sentence")
    return sentences


def write_conll(path: str | Path, sentences: Iterable[TaggedSentence]) -> None:
    """``sentences`` as a CoNLL file (``token tag`` lines, one ``-DOCSTART-`` document)."""
    lines = [f"{DOCSTART} O", ""]
    for sentence in sentences:
        lines += [f"{w} {t}" for w, t in zip(sentence.words, sentence.tags, strict=True)] + [""]
    Path(path).write_text("\n".join(lines), encoding="utf-8")
