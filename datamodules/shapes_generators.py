"""Open-world source attribution on the built-in data: which generator made an image, with some
generators known (partly labelled) and the others novel (never labelled), for CPL (Sun et al.,
ICCV 2023) and other open-world semi-supervised methods.

The built-in data (datamodules/embedded/shape_generators.py): the shapes scenes, each through
one of ``generators`` leaving a faint fingerprint of ``strength`` grey levels; the first
``num_known`` are known, ``labelled_fraction`` of their training items labelled. Or the OW-DFA
protocol meta CSVs on disk (``data.format: owdfa``, datamodules/formats/owdfa.py).

Batches: ``image`` float32 [B, 3, S, S] in [-1, 1] (``augment.train``, default none: crops and
resizing would wash out the fingerprints), ``label/source`` (the true source of every item,
label ids ``0 .. num_known - 1`` known, the rest novel), ``labelled`` bool [B] (training:
whether the item's source may be used; evaluation: all False), ``index``, ``item_id``.
``known_classes["source"]``: the number of known sources (the ``open_world`` evaluator splits
known from novel by it).
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from datamodules.embedded.shape_generators import GENERATORS
from datamodules.items import ItemsDataConfig, ItemsDataModule, SeededImageTransform, Transform
from datamodules.sources import generators as _sources  # noqa: F401  (registers the sources)
from modules.registry import DATAMODULES


@dataclass
class ShapesGeneratorsDataConfig(ItemsDataConfig):
    """Built-in data: the shapes scenes' ``num_*``, ``image_size``, ``hard_negative_fraction``,
    ``seed``, then ``generators`` (names, known ones first), ``num_known``,
    ``labelled_fraction`` and ``strength``; ``owdfa`` format: ``meta_paths`` (relative to
    ``data.root``) and ``train_ratio``."""

    family: ClassVar[str] = "shapes_generators"

    name: str = "shapes_generators"
    image_size: int = 32
    hard_negative_fraction: float = 0.25
    generators: list[str] = field(default_factory=lambda: list(GENERATORS))
    num_known: int = 3
    labelled_fraction: float = 0.5
    strength: float = 4.0
    meta_paths: list[str] = field(default_factory=list)
    train_ratio: float = 0.8

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.train_ratio < 1.0:
            raise ValueError(f"data.train_ratio must be in (0, 1), got {self.train_ratio}")


def labelled_flag(raw: Any, seed: int | None = None) -> torch.Tensor:
    """The item's 0/1 flag as a bool tensor."""
    return torch.tensor(bool(np.asarray(raw)))


@DATAMODULES.register("shapes_generators", ShapesGeneratorsDataConfig)
class ShapesGeneratorsDataModule(ItemsDataModule):
    """Images by known and novel sources, part of the known ones labelled (generated on
    first use for the built-in data)."""

    name = "shapes_generators"
    modalities = ("image",)
    pairs = ()

    def __init__(
        self, cfg: ShapesGeneratorsDataConfig | None = None, tokenizer: Any = None
    ) -> None:
        super().__init__(cfg or ShapesGeneratorsDataConfig(), tokenizer)

    @property
    def labels(self) -> dict[str, int]:
        return {"source": self.source.num_sources()}

    @property
    def known_classes(self) -> dict[str, int]:
        """Task -> number of known classes (label ids below it); the rest are novel."""
        return {"source": self.source.num_known()}

    def tower_context(self) -> dict[str, Any]:
        return {"image_size": self.cfg.image_size, "in_channels": 3}

    def _transforms(self, train: bool) -> dict[str, Transform]:
        steps = self.cfg.augment.train if train else self.cfg.augment.eval
        return {"image": SeededImageTransform(steps), "labelled": labelled_flag}
