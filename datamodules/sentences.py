"""Sentences only: sentence-embedding training and STS evaluation (SimCSE and its successors).

One modality, ``text``. ``data.train`` chooses what a training sample is, as views of text
(tokenized by the collate into ``text@<v>_ids`` / ``text@<v>_mask``; the base encodes each with
the text tower as output ``text@<v>``):

- ``unsupervised``: one sentence twice, ``text@0`` = ``text@1`` (unsupervised SimCSE: the two
  dropout passes are the positive pair);
- ``paraphrase``: two sentences with the same meaning (co-cited-like positives);
- ``nli``: ``text@0`` a premise, ``text@1`` a hypothesis it entails, ``text@2`` one it
  contradicts (supervised SimCSE's hard negative);
- ``paraphrase_nli``: ``text@0`` a sentence, ``text@1`` a paraphrase (the same meaning, as the
  STS pairs' ``label/paraphrase``), ``text@2`` the contradiction (pair models such as DSE whose
  positives should be what the test calls positive; from NLI files the entailment is the
  paraphrase).

Training samples also carry ``item_id`` (the built-in data's meaning id) and ``label/domain``.
Validation and test samples are STS pairs: ``text`` (sentence 1), ``text@1`` (sentence 2),
``target/score`` (gold similarity), ``label/paraphrase`` (1: score at the top of the scale),
``label/domain`` where known; the ``sts`` evaluator scores the cosine of the two embeddings
against the gold score (``sts/spearman``).

Sources (``data.format``): ``embedded`` (datamodules/embedded/sentences.py: a generated
language where the gold score counts the factors two meanings share) and ``files``
(datamodules/sources/sentences.py: wiki1m text or SNLI/MNLI JSONL, STS-B / SICK TSVs).
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.base import SplitsDataModule
from datamodules.config import SourceDataConfig
from datamodules.pairs import TokenizeCollate
from datamodules.sources.sentences import TRAIN_COLUMNS, SentenceSplit
from modules.registry import DATAMODULES


@dataclass
class SentencesDataConfig(SourceDataConfig):
    """``train``: the training samples (module docstring); ``train_file``, ``val_file``,
    ``test_file``: the files of ``format: files``; ``paraphrase_score``: the gold score from
    which an evaluation pair counts as a paraphrase (``label/paraphrase``; 5 on the built-in
    data, where 5 means the same meaning, and on STS-B's 0-5 scale); ``shots``: train on the
    first ``shots`` samples of each ``label/<shots_label>`` class only (few-shot)."""

    family: ClassVar[str] = "sentences"

    name: str = "sentences"
    batch_size: int = 64
    train: str = "unsupervised"
    max_text_len: int = 32
    train_file: str | None = None
    val_file: str | None = None
    test_file: str | None = None
    paraphrase_score: float = 5.0
    # few-shot training: only the first ``shots`` training samples of each class of
    # ``label/<shots_label>`` (None: every sample)
    shots: int | None = None
    shots_label: str = "domain"

    def __post_init__(self) -> None:
        if self.shots is not None and self.shots < 1:
            raise ValueError(f"data.shots must be at least 1, got {self.shots}")
        if self.train not in TRAIN_COLUMNS:
            raise ValueError(f"data.train must be one of {list(TRAIN_COLUMNS)}, got {self.train!r}")
        if self.max_text_len < 3:
            raise ValueError(f"data.max_text_len must be at least 3, got {self.max_text_len}")
        super().__post_init__()


class SentenceDataset(Dataset):
    """Samples of one split: training rows as views ``text@<v>`` of ``columns``; evaluation
    rows as an STS pair (``text``, ``text@1``, ``target/score``, ``label/paraphrase``)."""

    def __init__(
        self, split: SentenceSplit, columns: tuple[str, ...] | None, paraphrase_score: float
    ) -> None:
        self.split, self.columns, self.paraphrase_score = split, columns, paraphrase_score

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict[str, Any]:
        split = self.split
        if self.columns is not None:
            sample: dict[str, Any] = {
                f"text@{v}": split.texts[c][i] for v, c in enumerate(self.columns)
            }
        else:
            score = float(split.score[i])
            sample = {
                "text": split.texts["sentence1"][i],
                "text@1": split.texts["sentence2"][i],
                "target/score": torch.tensor(score),
                "label/paraphrase": int(score >= self.paraphrase_score),
            }
        sample.update(index=i, item_id=int(split.item_id[i]))
        for task, ids in split.labels.items():
            sample[f"label/{task}"] = int(ids[i])
        return sample


def first_per_class(split: SentenceSplit, task: str, shots: int) -> SentenceSplit:
    """The rows of ``split`` that are among the first ``shots`` of their ``task`` class, in
    their order (few-shot training: ``data.shots``)."""
    if task not in split.labels:
        raise ValueError(
            f"data.shots: the training data has no label {task!r} (labels: {sorted(split.labels)})"
        )
    labels = split.labels[task]
    rows = np.sort(np.concatenate([np.flatnonzero(labels == c)[:shots] for c in np.unique(labels)]))
    return SentenceSplit(
        texts={column: [texts[i] for i in rows] for column, texts in split.texts.items()},
        item_id=split.item_id[rows],
        labels={name: ids[rows] for name, ids in split.labels.items()},
        score=None if split.score is None else split.score[rows],
    )


@DATAMODULES.register("sentences", SentencesDataConfig)
class SentencesDataModule(SplitsDataModule):
    """Sentence-embedding data: training views of text, STS pairs to evaluate."""

    name = "sentences"
    modalities = ("text",)
    #: The two embeddings the ``sts`` evaluator compares (sentence 1, sentence 2).
    sts_pair = ("text", "text@1")

    def __init__(self, cfg: SentencesDataConfig | None = None, tokenizer: Any = None) -> None:
        super().__init__(cfg or SentencesDataConfig(), tokenizer)

    @property
    def views(self) -> dict[str, int]:
        return {"text": len(TRAIN_COLUMNS[self.cfg.train])}

    @property
    def class_names(self) -> dict[str, list[str]]:
        return dict(self.source.class_names)

    @property
    def label_descriptions(self) -> dict[str, list[str]]:
        """Task -> a sentence describing each class, in label-id order (input-label contrast)."""
        return dict(self.source.label_descriptions)

    @property
    def targets(self) -> tuple[str, ...]:
        return ("score",)

    def tower_context(self) -> dict[str, Any]:
        return {"max_text_len": self.cfg.max_text_len}

    def num_items(self, split: str) -> int:
        return len(self.datasets[split])

    def training_texts(self) -> list[str]:
        """Every distinct training sentence of the chosen mode (the vocabulary of a word-level
        tokenizer)."""
        split = self.source.split("train")
        texts = [t for column in set(TRAIN_COLUMNS[self.cfg.train]) for t in split.texts[column]]
        return list(dict.fromkeys(texts))

    def _dataset(self, split: str) -> SentenceDataset:
        data = self.source.split(split)
        if split == "train" and self.cfg.shots is not None:
            data = first_per_class(data, self.cfg.shots_label, self.cfg.shots)
        columns = TRAIN_COLUMNS[self.cfg.train] if split == "train" else None
        return SentenceDataset(data, columns, self.cfg.paraphrase_score)

    def _collate_with(self, tokenizer: Any, train: bool) -> TokenizeCollate:
        return TokenizeCollate(tokenizer)
