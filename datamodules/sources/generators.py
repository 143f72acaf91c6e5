"""Sources of the open-world attribution family (``shapes_generators``): the built-in shapes
scenes through synthetic generators, and the OW-DFA protocol meta CSVs on disk; each split
handed over as an :class:`~datamodules.items.ItemSplit` whose items carry ``image`` and
``labelled`` (0/1: the item's source label may be used in training) and whose ``source`` label
is the true source of every item (evaluation reads it; a method uses it only where
``labelled``). Validation and test items are never labelled.

Every source also says how many sources there are (``num_sources``) and how many of them are
known (``num_known``: label ids below it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datamodules.embedded.shape_generators import (
    GeneratorsConfig,
    ensure_generators,
    load_record,
)
from datamodules.formats.owdfa import MetaRows, read_meta, split_rows
from datamodules.items import ItemSplit
from datamodules.media import IMAGE_ERRORS, MediaError
from datamodules.sources import SOURCES, EmbeddedSource, Source
from datamodules.sources.shapes import scenes_of
from datamodules.storage import MappedArray


class FlaggedImages:
    """Item id -> ``{"image": uint8 [S, S, 3], "labelled": 0/1}`` from an image loader."""

    def __init__(self, images: Any, labelled: np.ndarray) -> None:
        self.images, self.labelled = images, labelled

    def __call__(self, item: int) -> dict[str, Any]:
        return {"image": self.images[item], "labelled": np.int64(self.labelled[item])}


def generator_of(cfg: Any) -> GeneratorsConfig:
    return GeneratorsConfig(
        scenes=scenes_of(cfg),
        generators=tuple(cfg.generators),
        num_known=cfg.num_known,
        labelled_fraction=cfg.labelled_fraction,
        strength=cfg.strength,
        seed=cfg.seed,
    )


@SOURCES.register("shapes_generators", "embedded")
class EmbeddedGenerators(EmbeddedSource[ItemSplit]):
    """The built-in scenes with one generator fingerprint each."""

    name = "shape-generators"
    generator_of = staticmethod(generator_of)
    ensure = staticmethod(ensure_generators)

    def num_sources(self) -> int:
        return len(self.generator.generators)

    def num_known(self) -> int:
        return self.generator.num_known

    def _split(self, split: str) -> ItemSplit:
        directory = self.directory()
        record = load_record(directory, split)
        images = MappedArray(directory / f"{split}_images.npy")
        return ItemSplit(
            len(record["source"]),
            FlaggedImages(images, record["labelled"]),
            labels={"source": record["source"]},
        )


class ImageFiles:
    """Item id -> the image file resized to ``size`` x ``size`` RGB (a bad file: MediaError)."""

    def __init__(self, paths: list[Path], size: int) -> None:
        self.paths, self.size = paths, size

    def __getitem__(self, i: int) -> np.ndarray:
        try:
            with Image.open(self.paths[i]) as image:
                rgb = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
                return np.asarray(rgb)
        except FileNotFoundError:
            raise MediaError(f"image {self.paths[i]} not found") from None
        except IMAGE_ERRORS as err:
            raise MediaError(f"image {self.paths[i]} could not be read: {err}") from None


@SOURCES.register("shapes_generators", "owdfa")
class OWDFAMeta(Source[ItemSplit]):
    """OW-DFA meta CSVs (datamodules/formats/owdfa.py) under ``data.root``: ``data.meta_paths``
    (one or more protocols, concatenated), split per (image_source, label) with
    ``data.train_ratio``; validation and test are both the held-out rows (the official code
    validates on its test split). Faces are expected pre-cropped (the official loader crops
    them with dlib)."""

    @classmethod
    def check(cls, cfg: Any) -> None:
        if not cfg.meta_paths:
            raise ValueError("data.format 'owdfa' needs data.meta_paths (one CSV per protocol)")

    def describe(self) -> str:
        return f"owdfa at {self.cfg.root} ({', '.join(self.cfg.meta_paths)})"

    def _rows(self) -> tuple[MetaRows, np.ndarray, np.ndarray]:
        if "rows" not in self.__dict__:
            root = self.root()
            parts = [read_meta(root / p) for p in self.cfg.meta_paths]
            rows = MetaRows(
                [p for part in parts for p in part.paths],
                np.concatenate([part.labels for part in parts]),
                np.concatenate([part.tags for part in parts]),
                [g for part in parts for g in part.groups],
            )
            self.rows = (rows, *split_rows(rows, self.cfg.train_ratio, self.cfg.seed))
        return self.rows

    def num_sources(self) -> int:
        return int(self._rows()[0].labels.max()) + 1

    def num_known(self) -> int:
        rows = self._rows()[0]
        labelled = rows.labels[rows.tags == 1]
        return int(labelled.max()) + 1 if len(labelled) else 0

    def _split(self, split: str) -> ItemSplit:
        rows, train, held_out = self._rows()
        ids = train if split == "train" else held_out
        root = self.root()
        paths = [root / rows.paths[i] for i in ids]
        labelled = (rows.tags[ids] == 1) if split == "train" else np.zeros(len(ids), bool)
        images = ImageFiles(paths, self.cfg.image_size)
        return ItemSplit(
            len(ids), FlaggedImages(images, labelled), labels={"source": rows.labels[ids]}
        )
