"""Sources of the ``definitions`` family: the built-in dictionary
(datamodules/embedded/definitions.py) and files (``format: files``: a dictionary in the GCIDE
JSON or word-definition TSV layout, datamodules/formats/dictionary.py, and STS-B / SICK TSVs to
evaluate). Training definitions are a :class:`~datamodules.sources.sentences.SentenceSplit`
with the text column ``definition`` and the labels ``entry`` (and ``domain`` where known);
evaluation splits are STS pairs, on the built-in data the ``sentences`` family's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datamodules.embedded.definitions import (
    DefinitionsConfig,
    ensure_definitions,
    load_definitions,
)
from datamodules.embedded.sentences import DOMAIN_NAMES
from datamodules.formats.dictionary import read_dictionary
from datamodules.sources import SOURCES, EmbeddedSource, Source
from datamodules.sources.sentences import EmbeddedSentences, SentenceFiles, SentenceSplit


def definition_split(entries: list[str], definitions: list[str]) -> SentenceSplit:
    """Definitions labelled by their entry (ids in order of first appearance; the item id of a
    definition is its entry's)."""
    ids: dict[str, int] = {}
    entry_id = np.array([ids.setdefault(e, len(ids)) for e in entries], dtype=np.int64)
    return SentenceSplit({"definition": list(definitions)}, entry_id, {"entry": entry_id})


def entry_names(split: SentenceSplit, entries: list[str]) -> list[str]:
    """The headword of each entry id."""
    names = [""] * int(split.item_id.max() + 1)
    for i, name in zip(split.item_id.tolist(), entries, strict=True):
        names[i] = name
    return names


@SOURCES.register("definitions", "embedded")
class EmbeddedDefinitions(EmbeddedSource[SentenceSplit]):
    """The generated dictionary; its evaluation pairs are the generated sentences' STS pairs
    (same seed and sizes)."""

    name = "definitions"
    ensure = staticmethod(ensure_definitions)

    @staticmethod
    def generator_of(cfg: Any) -> DefinitionsConfig:
        return DefinitionsConfig(
            cfg.num_train, cfg.definitions_per_entry, cfg.drop_probability, cfg.seed
        )

    @property
    def class_names(self) -> dict[str, list[str]]:
        records = load_definitions(self.directory())
        return {
            "entry": entry_names(self.split("train"), [r["entry"] for r in records]),
            "domain": list(DOMAIN_NAMES),
        }

    def _split(self, split: str) -> SentenceSplit:
        if split != "train":
            return self._sentences().split(split)
        records = load_definitions(self.directory())
        data = definition_split([r["entry"] for r in records], [r["definition"] for r in records])
        data.labels["domain"] = np.array([r["domain"] for r in records], dtype=np.int64)
        return data

    def _sentences(self) -> EmbeddedSentences:
        """The generated sentences of the same seed and evaluation sizes (their STS pairs do
        not depend on the number of training meanings)."""
        return EmbeddedSentences(self.cfg)


@SOURCES.register("definitions", "files")
class DictionaryFiles(Source[SentenceSplit]):
    """``data.train_file``: a dictionary (``.json``: GCIDE; else ``entry<TAB>definition``);
    ``data.val_file`` / ``data.test_file``: STS-B or SICK TSVs. Relative paths are under
    ``data.root``."""

    @classmethod
    def check(cls, cfg: Any) -> None:
        for key in ("train_file", "val_file", "test_file"):
            if not getattr(cfg, key):
                raise ValueError(f"data.{key}: required with data.format files")

    def _path(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else self.root() / path

    @property
    def class_names(self) -> dict[str, list[str]]:
        pairs = read_dictionary(self._path(self.cfg.train_file))
        return {"entry": entry_names(self.split("train"), [p[0] for p in pairs])}

    def _split(self, split: str) -> SentenceSplit:
        if split == "train":
            pairs = read_dictionary(self._path(self.cfg.train_file))
            return definition_split([p[0] for p in pairs], [p[1] for p in pairs])
        return SentenceFiles(self.cfg).split(split)  # the sentences family's STS reader
