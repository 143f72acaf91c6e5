"""Word-level tokenizer built from training captions.

Small and deterministic: the vocabulary is the sorted set of lower-cased words that occur at
least ``min_count`` times, after the special tokens. It is stored as a plain list of strings in
the checkpoint's hyper-parameters, so a run reloads with exactly the ids it was trained with.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import torch

PAD, UNK, CLS = "<pad>", "<unk>", "<cls>"
SPECIALS = (PAD, UNK, CLS)
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def split_words(text: str) -> list[str]:
    """Lower-case words and single punctuation marks."""
    return _WORD.findall(text.lower())


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
