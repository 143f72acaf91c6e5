"""Two text corpora for word embeddings: cross-lingual alignment (``mode: languages``) and
cross-corpus semantic shift (``mode: periods``); the built-in corpora and their gold data are
described in datamodules/embedded/word_corpora.py, the files under ``data.root`` in
datamodules/sources/word_corpora.py.

Encoders ``corpus_a`` and ``corpus_b``: one word-embedding table each (``model.<name>.name:
word_table``) over the data's joint vocabulary (the words of either corpus with at least
``min_count`` occurrences, corpus A's most frequent first; ``tower_context()['num_words']``).
Words are ``split_words`` tokens separated by spaces.

Training samples (``data.train``):

- ``windows`` (word2vec CBOW with negative sampling): sample ``i`` is a word position of each
  corpus (``i`` modulo its size, so one epoch passes the larger corpus once and both corpora
  are seen equally often): ``corpus_<c>`` long ``[B, 2 * window]`` the context word ids in the
  same sentence (``-1`` padding), ``center/corpus_<c>`` ``[B]`` the word to predict and
  ``negatives/corpus_<c>`` ``[B, negatives]`` words drawn from the corpus's unigram distribution
  raised to 3/4 (word2vec), by torch's RNG in the collate (seeded per run and epoch);
- ``dictionary`` (alignment): sample ``i`` is pair ``i`` of ``train.dict``:
  ``corpus_a`` ``[B, 1]`` the source word, ``corpus_b`` ``[B, 1]`` the target word (pairs whose
  words are out of the vocabulary are dropped).

Evaluation samples (val and test alike: the gold data has no validation part): one per word of
the joint vocabulary, ``corpus_a`` = ``corpus_b`` = ``[[word]]``, with ``label/source`` and
``label/target`` (1 if the word is in corpus A's / B's vocabulary), and ``label/gold``
``[B, M]`` the word's translations in ``test.dict`` (``-1`` padded; languages) or
``label/shifted`` (1 shifted, 0 kept, -1 not in both vocabularies; periods). Evaluators
``word_translation`` (languages) and ``semantic_shift`` (periods) read them.

Scoped down: gensim's frequent-word subsampling and its randomly shrunk windows are left out
(every context word within ``window`` counts).
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

import datamodules.sources.word_corpora  # noqa: F401  (registers the sources)
from datamodules.base import SplitsDataModule
from datamodules.config import SourceDataConfig
from datamodules.embedded.word_corpora import MODES, WordCorpora, vocabulary
from datamodules.errors import DataError
from modules.registry import DATAMODULES

CORPORA = ("corpus_a", "corpus_b")
TRAIN_MODES = ("windows", "dictionary")


@dataclass
class WordCorporaDataConfig(SourceDataConfig):
    """``num_train``: sentences per built-in corpus (``num_val``/``num_test`` are unused: the
    evaluation is the vocabulary)."""

    family: ClassVar[str] = "word_corpora"

    name: str = "word_corpora"
    mode: str = "languages"  # languages | periods
    train: str = "windows"  # windows | dictionary
    num_train: int = 4000
    batch_size: int = 256
    window: int = 5  # CADE / word2vec default
    negatives: int = 10  # CADE default (gensim: 5)
    min_count: int = 5
    affinity: float = 0.3
    drift: float = 0.2
    test_fraction: float = 0.3
    num_shifted: int = 4
    shift_fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"data.mode must be one of {MODES}, got {self.mode!r}")
        if self.train not in TRAIN_MODES:
            raise ValueError(f"data.train must be one of {TRAIN_MODES}, got {self.train!r}")
        if self.window < 1 or self.negatives < 1:
            raise ValueError(
                f"data.window and data.negatives must be at least 1, got {self.window}, "
                f"{self.negatives}"
            )
        super().__post_init__()


def word_index(corpora: WordCorpora, min_count: int) -> dict[str, int]:
    """The joint vocabulary: corpus A's words (most frequent first), then corpus B's others."""
    words = vocabulary(corpora.corpus_a, min_count)
    seen = set(words)
    words += [w for w in vocabulary(corpora.corpus_b, min_count) if w not in seen]
    return {w: i for i, w in enumerate(words)}


@dataclass(frozen=True)
class Windows:
    """Every in-vocabulary position of one corpus: its word, its context words (``-1``
    padded) and the corpus's negative-sampling distribution over the joint vocabulary."""

    centers: np.ndarray  # int64 [N]
    contexts: np.ndarray  # int64 [N, 2 * window]
    noise: torch.Tensor  # float64 [V]: unigram^0.75, normalised

    @classmethod
    def of(cls, lines: list[str], index: dict[str, int], window: int) -> Windows:
        centers, contexts = [], []
        for line in lines:
            ids = [index[w] for w in line.split() if w in index]  # gensim drops rare words
            for p, word in enumerate(ids):
                around = ids[max(0, p - window) : p] + ids[p + 1 : p + 1 + window]
                centers.append(word)
                contexts.append(around + [-1] * (2 * window - len(around)))
        if not centers:
            raise DataError("a corpus has no word of the vocabulary (lower data.min_count)")
        counts = np.bincount(np.asarray(centers), minlength=len(index)).astype(np.float64)
        noise = counts**0.75
        return cls(
            np.asarray(centers, dtype=np.int64),
            np.asarray(contexts, dtype=np.int64).reshape(len(centers), 2 * window),
            torch.from_numpy(noise / noise.sum()),
        )


class WindowsDataset(Dataset):
    """Sample ``i``: position ``i`` modulo its size of each corpus."""

    def __init__(self, windows: dict[str, Windows]) -> None:
        self.windows = windows

    def __len__(self) -> int:
        return max(len(w.centers) for w in self.windows.values())

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample: dict[str, Any] = {"index": i, "item_id": i}
        for name, w in self.windows.items():
            p = i % len(w.centers)
            sample[name] = torch.from_numpy(w.contexts[p])
            sample[f"center/{name}"] = int(w.centers[p])
        return sample


class WordsDataset(Dataset):
    """Fixed samples: one dict of tensors / ints per row."""

    def __init__(self, samples: list[dict[str, Any]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.samples[i]


class WordsCollate:
    """Stacks the samples; for ``windows`` training, draws each corpus's negatives."""

    def __init__(self, noise: dict[str, torch.Tensor], negatives: int) -> None:
        self.noise, self.negatives = noise, negatives

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {}
        for key in samples[0]:
            values = [s[key] for s in samples]
            batch[key] = torch.stack(values) if torch.is_tensor(values[0]) else torch.tensor(values)
        for name, noise in self.noise.items():
            draws = torch.multinomial(noise, len(samples) * self.negatives, replacement=True)
            batch[f"negatives/{name}"] = draws.view(len(samples), self.negatives)
        return batch


@DATAMODULES.register("word_corpora", WordCorporaDataConfig)
class WordCorporaDataModule(SplitsDataModule):
    """Two corpora, one word-embedding table per corpus (see the module docstring)."""

    modalities = CORPORA

    def __init__(self, cfg: WordCorporaDataConfig | None = None, tokenizer: Any = None) -> None:
        super().__init__(cfg or WordCorporaDataConfig(), tokenizer)
        self._corpora: WordCorpora | None = None
        self._index: dict[str, int] | None = None
        self._windows: dict[str, Windows] | None = None

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        return ()  # no cross-modal retrieval: the evaluators below score the words

    @property
    def corpora(self) -> WordCorpora:
        if self._corpora is None:
            self._corpora = self.source.split("train")
        return self._corpora

    @property
    def index(self) -> dict[str, int]:
        """Word -> row of the embedding tables."""
        if self._index is None:
            self._index = word_index(self.corpora, self.cfg.min_count)
        return self._index

    @property
    def words(self) -> list[str]:
        """The joint vocabulary, in row order."""
        return list(self.index)

    def tower_context(self) -> dict[str, Any]:
        return {"num_words": len(self.index)}

    def num_items(self, split: str) -> int:
        return len(self.datasets[split]) if split in self.datasets else len(self._dataset(split))

    def training_texts(self) -> list[str]:
        return self.corpora.corpus_a + self.corpora.corpus_b

    def windows(self) -> dict[str, Windows]:
        """Each corpus's positions (computed once)."""
        if self._windows is None:
            texts = {"corpus_a": self.corpora.corpus_a, "corpus_b": self.corpora.corpus_b}
            self._windows = {
                name: Windows.of(lines, self.index, self.cfg.window)
                for name, lines in texts.items()
            }
        return self._windows

    def _dataset(self, split: str) -> Dataset:
        if split != "train":
            return WordsDataset(self._eval_samples())
        if self.cfg.train == "windows":
            return WindowsDataset(self.windows())
        index = self.index
        pairs = [(a, b) for a, b in self.corpora.train_pairs if a in index and b in index]
        if not pairs:
            raise DataError("train.dict: no pair has both words in the vocabulary")
        return WordsDataset(
            [
                {
                    "index": i,
                    "item_id": i,
                    "corpus_a": torch.tensor([index[a]]),
                    "corpus_b": torch.tensor([index[b]]),
                }
                for i, (a, b) in enumerate(pairs)
            ]
        )

    def _eval_samples(self) -> list[dict[str, Any]]:
        index, corpora, min_count = self.index, self.corpora, self.cfg.min_count
        in_a, in_b = (set(vocabulary(c, min_count)) for c in (corpora.corpus_a, corpora.corpus_b))
        gold: dict[str, list[int]] = {}
        for a, b in corpora.test_pairs:
            if a in index and b in index:
                gold.setdefault(a, []).append(index[b])
        width = max((len(v) for v in gold.values()), default=1)
        shifted = set(corpora.shifted)
        samples = []
        for word, i in index.items():
            sample = {
                "index": i,
                "item_id": i,
                "corpus_a": torch.tensor([i]),
                "corpus_b": torch.tensor([i]),
                "label/source": int(word in in_a),
                "label/target": int(word in in_b),
            }
            if self.cfg.mode == "languages":
                ids = gold.get(word, [])
                sample["label/gold"] = torch.tensor(ids + [-1] * (width - len(ids)))
            else:
                both = word in in_a and word in in_b
                sample["label/shifted"] = int(word in shifted) if both else -1
            samples.append(sample)
        return samples

    def _collate_with(self, tokenizer: Any, train: bool) -> WordsCollate:
        windows = train and self.cfg.train == "windows"
        noise = {name: w.noise for name, w in self.windows().items()} if windows else {}
        return WordsCollate(noise, self.cfg.negatives)
