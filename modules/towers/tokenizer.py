"""Tokenizers of the text towers: the protocol they share and the word-level one.

The word-level tokenizer is built from training captions. Small and deterministic: the
vocabulary is the sorted set of lower-cased words that occur at least ``min_count`` times, after
the special tokens. Its :meth:`~WordTokenizer.state` (a plain list of strings) is stored in the
checkpoint's hyper-parameters, so a run reloads with exactly the ids it was trained with.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, Self, runtime_checkable

import torch

from modules.words import split_words

PAD, UNK, CLS = "<pad>", "<unk>", "<cls>"
SPECIALS = (PAD, UNK, CLS)


@runtime_checkable
class TextTokenizer(Protocol):
    """What the data and the method need from the tokenizer a text tower owns.

    ``encode`` returns ``ids [B, L]`` long and ``mask [B, L]`` bool (True on real tokens, rows
    padded with id 0 to the longest row of the batch, at most ``max_len``); ``state()`` is plain
    JSON-able data (checkpoint hyper-parameters) from which ``from_state`` rebuilds a tokenizer
    that gives exactly the same ids.
    """

    max_len: int

    @property
    def vocab_size(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]: ...

    def state(self) -> dict[str, Any]: ...

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self: ...


class WordTokenizer:
    """Maps captions to ``(ids[B, L], mask[B, L])``; id 0 is padding, position 0 is ``<cls>``."""

    def __init__(self, vocab: Sequence[str], max_len: int = 32) -> None:
        if list(vocab[: len(SPECIALS)]) != list(SPECIALS):
            raise ValueError(f"vocabulary must start with {SPECIALS}")
        if max_len < 2:
            raise ValueError("max_len must be at least 2 (<cls> and one word)")
        self.vocab = list(vocab)
        self.max_len = max_len
        self._ids = {word: i for i, word in enumerate(self.vocab)}

    @classmethod
    def build(cls, texts: Iterable[str], max_len: int = 32, min_count: int = 1) -> WordTokenizer:
        """A tokenizer whose vocabulary is every word seen ``min_count`` times in ``texts``."""
        counts = Counter(word for text in texts for word in split_words(text))
        words = sorted(word for word, n in counts.items() if n >= min_count)
        return cls([*SPECIALS, *words], max_len=max_len)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> WordTokenizer:
        """The tokenizer that :meth:`state` describes."""
        if state.get("kind") != "word":
            raise ValueError(f"not a word-level tokenizer state: kind={state.get('kind')!r}")
        return cls(state["vocab"], max_len=state["max_len"])

    def state(self) -> dict[str, Any]:
        """Plain data that :meth:`from_state` rebuilds this tokenizer from."""
        return {"kind": "word", "vocab": list(self.vocab), "max_len": self.max_len}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (``<cls>`` first, truncated to ``max_len``) and a boolean validity mask.

        Rows are padded to the longest text of the batch, not to ``max_len``: attention cost
        grows with the padded length.
        """
        unk = self._ids[UNK]
        rows = [
            ([self._ids[CLS]] + [self._ids.get(w, unk) for w in split_words(text)])[: self.max_len]
            for text in texts
        ]
        ids = torch.zeros(len(rows), max((len(r) for r in rows), default=1), dtype=torch.long)
        for i, tokens in enumerate(rows):
            ids[i, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        return ids, ids != self._ids[PAD]

    def decode(self, ids: torch.Tensor) -> list[str]:
        """Words of each row, without specials (for logs and plots)."""
        return [" ".join(self.vocab[i] for i in row.tolist() if i >= len(SPECIALS)) for row in ids]
