"""Sources of the ``sentences`` family: the built-in generated sentences
(datamodules/embedded/sentences.py) and files in the public formats (``format: files``: a
wiki1m-style text file or an SNLI/MNLI JSONL file for training, STS-B / SICK TSVs for
evaluation; datamodules/formats/). Each split is handed over as a :class:`SentenceSplit`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.embedded.sentences import (
    DOMAIN_DESCRIPTIONS,
    DOMAIN_NAMES,
    SentencesConfig,
    ensure_sentences,
    load_records,
)
from datamodules.formats.sentence_pairs import read_nli_jsonl, read_sts_tsv
from datamodules.formats.text_lines import read_text_lines
from datamodules.sources import SOURCES, EmbeddedSource, Source

#: Training columns each training mode reads, in view order (``text@0``, ``text@1``, ...).
TRAIN_COLUMNS = {
    "unsupervised": ("sentence", "sentence"),
    "paraphrase": ("sentence", "paraphrase"),
    "nli": ("sentence", "entailment", "contradiction"),
    "paraphrase_nli": ("sentence", "paraphrase", "contradiction"),
}


@dataclass
class SentenceSplit:
    """A split's text columns (training: ``sentence``, ``paraphrase``, ``entailment``,
    ``contradiction`` where known; evaluation: ``sentence1``, ``sentence2``), the item id of
    each row (a training meaning; the pair), and where known its ``domain`` class and gold
    ``score``."""

    texts: dict[str, list[str]]
    item_id: np.ndarray
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    score: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.item_id)


@SOURCES.register("sentences", "embedded")
class EmbeddedSentences(EmbeddedSource[SentenceSplit]):
    """The generated sentences: training meanings in every form, STS pairs to evaluate."""

    name = "sentences"
    ensure = staticmethod(ensure_sentences)
    #: Classes of ``label/domain`` and a description of each (input-label contrast).
    class_names = {"domain": list(DOMAIN_NAMES)}
    label_descriptions = {"domain": list(DOMAIN_DESCRIPTIONS)}

    @staticmethod
    def generator_of(cfg: Any) -> SentencesConfig:
        return SentencesConfig(cfg.num_train, cfg.num_val, cfg.num_test, cfg.seed)

    def _split(self, split: str) -> SentenceSplit:
        records = load_records(self.directory(), split)
        if split == "train":
            columns = ("sentence", "paraphrase", "entailment", "contradiction")
            ids = np.array([r["meaning"] for r in records], dtype=np.int64)
            score = None
        else:
            columns = ("sentence1", "sentence2")
            ids = np.arange(len(records), dtype=np.int64)
            score = np.array([r["score"] for r in records], dtype=np.float32)
        domain = np.array([r["domain"] for r in records], dtype=np.int64)
        texts = {c: [r[c] for r in records] for c in columns}
        return SentenceSplit(texts, ids, {"domain": domain}, score)


@SOURCES.register("sentences", "files")
class SentenceFiles(Source[SentenceSplit]):
    """``data.train_file``: one sentence per line (``.txt``, wiki1m: modes ``unsupervised``)
    or SNLI/MNLI JSONL (``.jsonl``: modes ``nli``, ``paraphrase`` and ``paraphrase_nli``, where
    the entailment doubles as the paraphrase);
    ``data.val_file`` / ``data.test_file``: STS-B or SICK TSVs. Relative paths are under
    ``data.root``."""

    class_names: dict[str, list[str]] = {}
    label_descriptions: dict[str, list[str]] = {}

    @classmethod
    def check(cls, cfg: Any) -> None:
        for key in ("train_file", "val_file", "test_file"):
            if not getattr(cfg, key):
                raise ValueError(f"data.{key}: required with data.format files")
        nli = Path(cfg.train_file).suffix == ".jsonl"
        if nli and cfg.train == "unsupervised" or not nli and cfg.train != "unsupervised":
            raise ValueError(
                f"data.train: {cfg.train!r} does not fit data.train_file {cfg.train_file} (a .txt "
                "file of sentences trains 'unsupervised'; an NLI .jsonl file 'nli', 'paraphrase' "
                "or 'paraphrase_nli')"
            )

    def _path(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else self.root() / path

    def _split(self, split: str) -> SentenceSplit:
        if split != "train":
            pairs = read_sts_tsv(self._path(getattr(self.cfg, f"{split}_file")), split)
            texts = {"sentence1": [p[0] for p in pairs], "sentence2": [p[1] for p in pairs]}
            score = np.array([p[2] for p in pairs], dtype=np.float32)
            return SentenceSplit(texts, np.arange(len(pairs), dtype=np.int64), score=score)
        path = self._path(self.cfg.train_file)
        if path.suffix == ".jsonl":
            triples = read_nli_jsonl(path)
            texts = {
                "sentence": [t[0] for t in triples],
                "paraphrase": [t[1] for t in triples],
                "entailment": [t[1] for t in triples],
                "contradiction": [t[2] for t in triples],
            }
        else:
            texts = {"sentence": read_text_lines(path)}
        return SentenceSplit(texts, np.arange(len(texts["sentence"]), dtype=np.int64))
