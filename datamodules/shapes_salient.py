"""Contrastive-analysis data (SepCLR): a background set and a target set whose items carry an
extra salient pattern, seen through augmented views as ``shapes_views``.

Built-in (``format: embedded``): the shapes scenes of ``shapes_views`` (same ``num_*``,
``image_size``, ``hard_negative_fraction``, ``seed``: the same scenes), a fraction
``target_fraction`` of them with a blended digit-like glyph (``salient_kinds`` kinds, opacity
``salient_alpha``; datamodules/embedded/salient.py). On disk (``format: celeba_attrs``): CelebA's
accessories split of SepCLR's official code (datamodules/sources/salient.py).

Batches are those of ``shapes_views`` (training: the views ``image@0`` ..., evaluation: the
plain ``image``), with the labels ``group`` (0 background, 1 target), ``salient`` (the pattern's
kind; -1 on background items, which every probe ignores: the salient attribute is scored on the
target set only, as in the paper) and the common labels: ``shape``, ``color``, ``count``
(built-in) or ``data.common_attributes`` (CelebA, binary).
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

from dataclasses import dataclass, field
from typing import ClassVar

from datamodules.embedded.salient import GROUPS
from datamodules.shapes_views import SHAPES_LABELS, ShapesViewsDataConfig, ShapesViewsDataModule
from datamodules.sources import salient as _sources  # noqa: F401  (registers the sources)
from modules.registry import DATAMODULES


@dataclass
class ShapesSalientDataConfig(ShapesViewsDataConfig):
    """``target_fraction``, ``salient_kinds``, ``salient_alpha``: the built-in target set (its
    share of each split, how many glyph kinds, their opacity). ``celeba_attrs`` format: the
    files under ``root`` and which attributes are salient (background: none of them) and
    common (the official code: eyeglasses / hat, and sex)."""

    family: ClassVar[str] = "shapes_salient"

    name: str = "shapes_salient"
    target_fraction: float = 0.5
    salient_kinds: int = 4
    salient_alpha: float = 0.6
    attributes_file: str = "list_attr_celeba.csv"
    partition_file: str = "list_eval_partition.csv"
    images: str = "img_align_celeba"
    salient_attributes: list[str] = field(default_factory=lambda: ["Eyeglasses", "Wearing_Hat"])
    common_attributes: list[str] = field(default_factory=lambda: ["Male"])

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.salient_attributes) < 1:
            raise ValueError("data.salient_attributes must name at least one attribute")
        clash = set(self.common_attributes) & {*self.salient_attributes, "group", "salient"}
        if clash:
            raise ValueError(f"data.common_attributes: {sorted(clash)} is not a common attribute")


@DATAMODULES.register("shapes_salient", ShapesSalientDataConfig)
class ShapesSalientDataModule(ShapesViewsDataModule):
    """A background and a target set (generated on first use, or CelebA on disk)."""

    name = "shapes_salient"

    @property
    def embedded(self) -> bool:
        return self.cfg.format == "embedded"

    @property
    def labels(self) -> dict[str, int]:
        if self.embedded:
            common = dict(SHAPES_LABELS)
            kinds = self.cfg.salient_kinds
        else:
            common = {name: 2 for name in self.cfg.common_attributes}
            kinds = len(self.cfg.salient_attributes)
        return {**common, "group": len(GROUPS), "salient": kinds}

    @property
    def class_retrieval_labels(self) -> tuple[str, ...]:
        return ("shape", "color") if self.embedded else ()
