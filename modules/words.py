"""What a word is: the one splitting rule that the word-level tokenizer, the synthetic parallel
languages and the spoken transcripts share (ground layer: data and models both use it)."""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def split_words(text: str) -> list[str]:
    """Lower-case words and single punctuation marks."""
    return _WORD.findall(text.lower())
