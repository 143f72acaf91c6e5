"""Sources of the ``text_corpus`` family (documents for a language model): the built-in shapes
captions, one document per scene, and plain text files, one document per line
(``read_text_lines``). Each split is an :class:`~datamodules.items.ItemSplit` of text only."""

from __future__ import annotations

from typing import Any

from datamodules.embedded.shapes import ensure_shapes, load_split
from datamodules.formats.text_lines import read_text_lines
from datamodules.items import ItemSplit, MappedItems
from datamodules.sources import SOURCES, EmbeddedSource, Source
from datamodules.sources.shapes import scenes_of
from datamodules.storage import Captions

#: What ends each caption inside a built-in document.
SENTENCE_END = " ."


def scene_document(captions: list[str]) -> str:
    """One scene's captions as one document: each a sentence ending with ``" ."``."""
    return " ".join(f"{caption}{SENTENCE_END}" for caption in captions)


def documents_split(documents: list[str]) -> ItemSplit:
    """Documents as items with one caption each (the document) and no other modality."""
    return ItemSplit(
        len(documents), MappedItems({}), captions=Captions.from_lists([[d] for d in documents])
    )


@SOURCES.register("text_corpus", "embedded")
class SceneDocuments(EmbeddedSource[ItemSplit]):
    """The shapes scenes (``data.num_*``, ``image_size``, ``hard_negative_fraction``,
    ``seed``: the same scenes as ``image_text``); a document is a scene's five captions, five
    paraphrases of one scene in a row (datamodules/embedded/shapes.py)."""

    name = "shapes"
    generator_of = staticmethod(scenes_of)
    ensure = staticmethod(ensure_shapes)

    def _split(self, split: str) -> ItemSplit:
        scenes = load_split(self.directory(), split)
        return documents_split([scene_document(c) for c in scenes.captions])


@SOURCES.register("text_corpus", "text_lines")
class TextLines(Source[ItemSplit]):
    """``data.train_file`` / ``val_file`` / ``test_file`` under ``data.root``: plain UTF-8
    text, one document per line (blank lines skipped)."""

    def describe(self) -> str:
        return f"text_lines at {self.cfg.root}"

    def _split(self, split: str) -> ItemSplit:
        name: Any = getattr(self.cfg, f"{split}_file")
        return documents_split(read_text_lines(self.root() / name))
