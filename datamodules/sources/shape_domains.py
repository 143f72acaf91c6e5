"""Sources of the shapes-domains family (a source and a shifted target domain of image
classification): the built-in two-background shapes, and the Office-31 / Office-Home /
VisDA-C image lists on disk; each split handed over as an :class:`~datamodules.items.ItemSplit`.

``data.domain`` picks the training split's domain: ``source`` (labelled source images) or
``target`` (the target pool: its labels are the active-learning oracle, which a method reads
only for the items it queried); ``data.eval_domain`` picks the validation and test splits'
domain (``target`` by default: every stage is scored where the adaptation is meant to help).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datamodules.embedded.shape_domains import (
    ShapeDomainsConfig,
    ensure_shape_domains,
    load_labels,
)
from datamodules.formats.da_lists import read_image_list
from datamodules.items import ItemSplit, MappedItems
from datamodules.media import IMAGE_ERRORS, MediaError
from datamodules.sources import SOURCES, EmbeddedSource, Source
from datamodules.storage import MappedArray


def split_domain(cfg: Any, split: str) -> str:
    """The domain a split is drawn from: ``data.domain`` for training, else
    ``data.eval_domain``."""
    return cfg.domain if split == "train" else cfg.eval_domain


def generator_of(cfg: Any) -> ShapeDomainsConfig:
    return ShapeDomainsConfig(
        num_train=cfg.num_train,
        num_val=cfg.num_val,
        num_test=cfg.num_test,
        image_size=cfg.image_size,
        seed=cfg.seed,
    )


@SOURCES.register("shapes_domains", "embedded")
class EmbeddedShapeDomains(EmbeddedSource[ItemSplit]):
    """The built-in shapes on a grey (source) and a striped colour (target) background."""

    name = "shape_domains"
    generator_of = staticmethod(generator_of)
    ensure = staticmethod(ensure_shape_domains)

    def _split(self, split: str) -> ItemSplit:
        directory, domain = self.directory(), split_domain(self.cfg, split)
        labels = load_labels(directory, domain, split)
        images = MappedArray(directory / f"{domain}_{split}_images.npy")
        return ItemSplit(len(labels["shape"]), MappedItems({"image": images}), labels=labels)


class ListedImages:
    """Item -> ``{"image": uint8 [S, S, 3]}`` of listed image files (RGB, resized to S x S); a
    file that cannot be read raises ``MediaError``. Plain paths: pickles for workers."""

    def __init__(self, paths: list[Path], size: int) -> None:
        self.paths, self.size = paths, size

    def __call__(self, item: int) -> dict[str, np.ndarray]:
        path = self.paths[item]
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
        except IMAGE_ERRORS as err:
            raise MediaError(f"image {path} could not be read: {err}") from None
        return {"image": np.asarray(rgb)}


@SOURCES.register("shapes_domains", "image_list")
class ListedShapeDomains(Source[ItemSplit]):
    """Office-31 / Office-Home / VisDA-C image lists (datamodules/formats/da_lists.py) under
    ``data.root``: ``source_list`` and ``target_list`` (the domains), images under ``images``.
    As in LFTL's code the target list is both the pool and the test set (transductive), unless
    ``eval_list`` names a held-out list of the evaluation domain."""

    @classmethod
    def check(cls, cfg: Any) -> None:
        for key in ("source_list", "target_list"):
            if not getattr(cfg, key):
                raise ValueError(f"data.format 'image_list' needs data.{key}")
        if len(cfg.class_names) < 2:
            raise ValueError("data.format 'image_list' needs data.class_names (one per label id)")

    def describe(self) -> str:
        return f"image_list at {self.cfg.root} ({self.cfg.source_list} -> {self.cfg.target_list})"

    def _split(self, split: str) -> ItemSplit:
        root, domain = self.root(), split_domain(self.cfg, split)
        name = self.cfg.eval_list if split != "train" and self.cfg.eval_list else ""
        list_file = root / (name or getattr(self.cfg, f"{domain}_list"))
        listed = read_image_list(list_file, root / self.cfg.images)
        classes = len(self.cfg.class_names)
        if max(listed.labels) >= classes:
            raise ValueError(
                f"{list_file}: label {max(listed.labels)} >= the {classes} data.class_names"
            )
        labels = {"shape": np.asarray(listed.labels, dtype=np.int64)}
        items = ListedImages(listed.paths, self.cfg.image_size)
        return ItemSplit(len(listed.paths), items, labels=labels)
