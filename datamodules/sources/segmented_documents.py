"""Sources of the ``segmented_documents`` family: the built-in topic-chain documents
(datamodules/embedded/segmented_documents.py) and Wiki-727K-style folders
(datamodules/formats/wiki_sections.py). Each split is handed over as a list of documents, a
document a list of segments, a segment a list of sentences."""

from __future__ import annotations

from typing import Any

from datamodules.embedded.segmented_documents import (
    Document,
    SegmentedDocumentsConfig,
    ensure_segmented_documents,
    load_split,
)
from datamodules.formats.wiki_sections import read_wiki_folder
from datamodules.sources import SOURCES, EmbeddedSource, Source


@SOURCES.register("segmented_documents", "embedded")
class EmbeddedSegmentedDocuments(EmbeddedSource[list[Document]]):
    """The built-in documents: chains of (subject, place) topics."""

    name = "segmented_documents"
    ensure = staticmethod(ensure_segmented_documents)

    @staticmethod
    def generator_of(cfg: Any) -> SegmentedDocumentsConfig:
        return SegmentedDocumentsConfig(
            num_train=cfg.num_train,
            num_val=cfg.num_val,
            num_test=cfg.num_test,
            min_segments=cfg.min_segments,
            max_segments=cfg.max_segments,
            min_sentences=cfg.min_sentences,
            max_sentences=cfg.max_sentences,
            share_prob=cfg.share_prob,
            seed=cfg.seed,
        )

    def _split(self, split: str) -> list[Document]:
        return load_split(self.directory(), split)


@SOURCES.register("segmented_documents", "wiki727k")
class Wiki727K(Source[list[Document]]):
    """Wiki-727K-style folders under ``data.root``: ``data.split_dirs`` names each split's
    folder (Wiki-727K: ``train``, ``dev``, ``test``)."""

    def _split(self, split: str) -> list[Document]:
        return read_wiki_folder(self.root() / self.cfg.split_dirs[split])
