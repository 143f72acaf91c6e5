"""Synthetic parallel languages: every caption in K "languages" made by a word mapping.

Cross-lingual cross-modal retrieval (1-to-K contrastive learning, CCRK; methods/part2.md
Sec. 57) needs each image with K parallel captions, one per language. The paper machine-translates
CC2M into 10 languages; the built-in data has one language, so language ``k`` is made from it by
a consistent, deterministic word mapping (the spec's "deterministic token remapping"):

- language 0 is the original caption, unchanged (so ``languages: 1`` is today's data);
- language ``k >= 1`` replaces every word ``w`` by the token ``w + "q" + str(k)`` (one word of
  the word-level tokenizer, :func:`~modules.words.split_words`) and keeps the word
  order; punctuation marks are shared by all languages, as in real scripts.

The map is injective across languages: the digits after a token's last ``q`` name its language,
so a word never has the same token in two languages and two words never share one in a language.
The tokenizer learns the words of all K languages (``translate_all`` of the training captions),
so the text tower sees K disjoint vocabularies with the same meaning: only training can tie them.

:class:`ParallelLanguages` is the collate plug-in (``TokenizeCollate(tokenizer, plugins)``)
that puts the K languages into a batch, so the shared dataset knows nothing of them.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from modules.words import split_words

#: Separator between a word and its language number in a synthetic token.
MARKER = "q"


class SyntheticLanguages:
    """``num`` parallel languages of a caption; language 0 is the caption itself."""

    def __init__(self, num: int) -> None:
        if num < 1:
            raise ValueError(f"data.languages must be at least 1, got {num}")
        self.num = num

    def word(self, word: str, language: int) -> str:
        """``word`` (one token of ``split_words``) in ``language``."""
        if not 0 <= language < self.num:
            raise ValueError(f"language {language} not in [0, {self.num})")
        if language == 0 or not word.isalnum():
            return word
        return f"{word}{MARKER}{language}"

    def translate(self, text: str, language: int) -> str:
        """``text`` in ``language``: the original string for language 0, else its words mapped
        one by one (lower-cased, joined by single spaces, as the tokenizer splits them)."""
        if language == 0:
            return text
        return " ".join(self.word(w, language) for w in split_words(text))

    def parallel(self, text: str) -> list[str]:
        """``text`` in every language, language 0 first."""
        return [self.translate(text, k) for k in range(self.num)]

    def translate_all(self, texts: Iterable[str]) -> list[str]:
        """Every text in every language (for building a vocabulary that covers them all).

        Raises if a mapped token is also an original word (a caption word that already ends
        in ``q<digits>``): that token would tie two languages."""
        texts = list(texts)
        original = {w for text in texts for w in split_words(text)}
        mapped = {self.word(w, k) for w in original if w.isalnum() for k in range(1, self.num)}
        clash = sorted(original & mapped)
        if clash:
            raise ValueError(f"caption words {clash[:5]} collide with synthetic language tokens")
        return [t for text in texts for t in self.parallel(text)]


class ParallelLanguages:
    """Collate plug-in: each sample also gets ``text_k``, its ``text`` in every language
    (language 0 first; batched as ``text_ids_k`` / ``text_mask_k`` [B, K, L]). In ``train``
    batches ``text`` becomes one language drawn per sample from torch's RNG (seeded per worker
    and epoch by the DataLoader), so a 1-to-1 method sees every language; evaluation keeps
    language 0, the original."""

    def __init__(self, languages: SyntheticLanguages, train: bool) -> None:
        self.languages, self.train = languages, train

    def __call__(self, samples: list[dict]) -> list[dict]:
        out = []
        for sample in samples:
            texts = self.languages.parallel(sample["text"])
            text = texts[int(torch.randint(len(texts), ()).item())] if self.train else texts[0]
            out.append({**sample, "text": text, "text_k": texts})
        return out
