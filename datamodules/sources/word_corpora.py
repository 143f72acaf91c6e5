"""The sources of the ``word_corpora`` family: the built-in generator
(datamodules/embedded/word_corpora.py) and the same files under ``data.root`` (``files``):
``corpus_a.txt`` and ``corpus_b.txt`` (one sentence a line), ``train.dict`` (MUSE
``source target`` pairs: the seed dictionary, or the anchors of a Procrustes baseline) and, by
``data.mode``, ``test.dict`` (languages: the test dictionary) or ``shifted.txt`` (periods: the
gold shifted words, one a line). Every split hands over the whole :class:`WordCorpora`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datamodules.embedded.word_corpora import (
    WordCorpora,
    WordCorporaConfig,
    ensure_word_corpora,
)
from datamodules.formats.text_lines import read_text_lines
from datamodules.formats.word_vectors import read_dictionary, read_word_list
from datamodules.sources import SOURCES, EmbeddedSource, Source


def read_corpora(directory: Path, mode: str) -> WordCorpora:
    """The corpora and gold files of ``directory`` (see the module docstring)."""
    languages = mode == "languages"
    return WordCorpora(
        corpus_a=read_text_lines(directory / "corpus_a.txt"),
        corpus_b=read_text_lines(directory / "corpus_b.txt"),
        train_pairs=read_dictionary(directory / "train.dict"),
        test_pairs=read_dictionary(directory / "test.dict") if languages else [],
        shifted=[] if languages else read_word_list(directory / "shifted.txt"),
    )


def generator_of(cfg: Any) -> WordCorporaConfig:
    """The generator config of a ``word_corpora`` data config (``num_train``: sentences per
    corpus)."""
    return WordCorporaConfig(
        mode=cfg.mode,
        num_sentences=cfg.num_train,
        affinity=cfg.affinity,
        drift=cfg.drift,
        test_fraction=cfg.test_fraction,
        num_shifted=cfg.num_shifted,
        shift_fraction=cfg.shift_fraction,
        min_count=cfg.min_count,
        seed=cfg.seed,
    )


@SOURCES.register("word_corpora", "embedded")
class EmbeddedWordCorpora(EmbeddedSource[WordCorpora]):
    """The generated corpora."""

    name = "word_corpora"
    generator_of = staticmethod(generator_of)
    ensure = staticmethod(ensure_word_corpora)

    def _split(self, split: str) -> WordCorpora:
        return read_corpora(self.directory(), self.cfg.mode)


@SOURCES.register("word_corpora", "files")
class WordCorporaFiles(Source[WordCorpora]):
    """A researcher's two corpora and gold files under ``data.root``."""

    def _split(self, split: str) -> WordCorpora:
        return read_corpora(self.root(), self.cfg.mode)
