"""Sources of the ``shapes_salient`` family (contrastive analysis: a background set and a
target set with an extra salient pattern): the built-in shapes scenes with glyphs
(datamodules/embedded/salient.py), and CelebA's accessories split as SepCLR's official code
builds it (``celeba_accessories/create_dataset.py``: background = neither eyeglasses nor hat,
target = exactly one of them, the salient label says which; images with both are left out),
read from the CelebA attribute CSV (datamodules/formats/celeba.py). Each split is handed over
as an :class:`~datamodules.items.ItemSplit` with labels ``group``, ``salient`` (-1 on the
background) and the common labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datamodules.embedded.salient import SalientConfig, ensure_salient, load_labels
from datamodules.embedded.shapes import ensure_shapes
from datamodules.errors import DataError, DataFileMissing
from datamodules.formats.celeba import PARTITIONS, read_attribute_table
from datamodules.items import ItemSplit, MappedItems
from datamodules.media import IMAGE_ERRORS, MediaError
from datamodules.sources import SOURCES, EmbeddedSource, Source
from datamodules.sources.shapes import scenes_of
from datamodules.storage import MappedArray, cache_root


def generator_of(cfg: Any) -> SalientConfig:
    return SalientConfig(scenes_of(cfg), cfg.target_fraction, cfg.salient_kinds, cfg.salient_alpha)


@SOURCES.register("shapes_salient", "embedded")
class EmbeddedSalient(EmbeddedSource[ItemSplit]):
    """The shapes scenes, half of them (``data.target_fraction``) with a blended glyph."""

    name = "shapes_salient"
    generator_of = staticmethod(generator_of)
    ensure = staticmethod(ensure_salient)

    def _split(self, split: str) -> ItemSplit:
        directory = self.directory()
        scenes = ensure_shapes(self.generator.scenes, cache_root(self.cfg.cache_dir))
        labels = load_labels(directory, scenes, split)
        images = MappedArray(directory / f"{split}_images.npy")
        return ItemSplit(len(labels["group"]), MappedItems({"image": images}), labels=labels)


def read_face(path: Path, size: int) -> np.ndarray:
    """An image as RGB ``uint8 [size, size, 3]``: its centred square, resized (the official
    code crops CelebA's centred face square, then resizes)."""
    try:
        with Image.open(path) as image:
            w, h = image.size
            side = min(w, h)
            box = ((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)
            face = image.convert("RGB").crop(box).resize((size, size), Image.Resampling.BILINEAR)
    except FileNotFoundError:
        raise DataFileMissing(f"image file {path} not found") from None
    except IMAGE_ERRORS as err:
        raise MediaError(f"image file {path} could not be read: {err}") from None
    return np.asarray(face)


class FaceImages:
    """Listed image files read with :func:`read_face`."""

    def __init__(self, paths: list[Path], size: int) -> None:
        self.paths, self.size = paths, size

    def __getitem__(self, i: int) -> np.ndarray:
        return read_face(self.paths[i], self.size)


@SOURCES.register("shapes_salient", "celeba_attrs")
class CelebAAccessories(Source[ItemSplit]):
    """CelebA under ``data.root``: ``data.attributes_file`` (attributes, -1/1),
    ``data.partition_file`` (0/1/2 per image) and the images in ``data.images``. Background:
    none of ``data.salient_attributes``; target: exactly one, ``salient`` its position in the
    list; images with several are left out. ``data.common_attributes``: binary labels."""

    def describe(self) -> str:
        return f"celeba_attrs at {self.cfg.root} ({self.cfg.attributes_file})"

    def _split(self, split: str) -> ItemSplit:
        root = self.root()
        attributes_path = root / self.cfg.attributes_file
        partition_path = root / self.cfg.partition_file
        table = read_attribute_table(attributes_path)
        partitions = read_attribute_table(partition_path, allowed=tuple(PARTITIONS.values()))
        column = partitions.column("partition", partition_path)
        part_of = dict(zip(partitions.files, column, strict=True))
        missing = next((f for f in table.files if f not in part_of), None)
        if missing is not None:
            raise DataError(f"{partition_path}: no partition for {missing} ({attributes_path})")
        present = np.stack(
            [table.column(a, attributes_path) == 1 for a in self.cfg.salient_attributes], axis=1
        )
        kept = (present.sum(axis=1) <= 1) & np.array(
            [part_of[f] == PARTITIONS[split] for f in table.files]
        )
        rows = np.flatnonzero(kept)
        if len(rows) == 0:
            raise DataError(f"{attributes_path}: no usable image in the {split} partition")
        group = present[rows].any(axis=1).astype(np.int64)
        salient = np.where(group == 1, present[rows].argmax(axis=1), -1).astype(np.int64)
        labels = {
            name: (table.column(name, attributes_path)[rows] == 1).astype(np.int64)
            for name in self.cfg.common_attributes
        }
        labels |= {"group": group, "salient": salient}
        paths = [root / self.cfg.images / table.files[r] for r in rows]
        images = FaceImages(paths, self.cfg.image_size)
        return ItemSplit(len(rows), MappedItems({"image": images}), labels=labels)
