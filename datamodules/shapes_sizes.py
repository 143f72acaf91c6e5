"""Imbalanced regression on the built-in data: the size of one shape per image (for ConR and
other deep imbalanced regression methods).

``target/size`` (float32, pixels; datamodules/embedded/shape_sizes.py) is long-tailed in
training and balanced over the same range in validation and test, as in AgeDB-DIR: with unit
bins and the usual thresholds (many-shot: more than 100 training items, few-shot: fewer than
20) the default 10k training items give all three regions. ``train_targets("size")`` holds the
training values for the evaluation's shot regions.

Batches: ``image`` float32 [B, 3, S, S] in [-1, 1] (training: ``augment.train``, default none;
ConR's regression loss reads it), and in training also ``image@0`` ... ``image@{views - 1}``
drawn with ``view_augment``: by default flips, translations of at most 3 pixels (the object
keeps a 4-pixel margin) and colour jitter, none of which changes the size (no rescaling crop).
``label/shape`` (6) and ``label/color`` (6), uniform and independent of the size.
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

from dataclasses import dataclass, field
from typing import Any, ClassVar

from datamodules.embedded.shape_sizes import MARGIN, SizesConfig
from datamodules.embedded.shapes import COLORS, SHAPES
from datamodules.items import (
    ItemsDataConfig,
    ItemsDataModule,
    SeededImageTransform,
    Transform,
    steps_per_view,
)
from datamodules.shapes_views import KEEP_HUE_JITTER
from datamodules.sources import shapes as _sources  # noqa: F401  (registers the source)
from modules.registry import DATAMODULES


def size_keeping_views() -> list[dict[str, Any]]:
    """The default view recipe: nothing in it rescales the object."""
    shift = MARGIN - 1
    return [
        {"name": "HorizontalFlip", "p": 0.5},
        {"name": "VerticalFlip", "p": 0.5},
        # cv2.BORDER_REFLECT_101 (4): the border strip brought in is background
        {"name": "Affine", "translate_px": [-shift, shift], "border_mode": 4, "p": 1.0},
        dict(KEEP_HUE_JITTER),
    ]


@dataclass
class ShapesSizesDataConfig(ItemsDataConfig):
    """Sizes in ``[size_min, size_max)`` pixels; ``train_distribution``: ``long_tail`` (the
    imbalanced benchmark) or ``balanced`` (a control). ``view_augment``: one step list for
    every view or one per view; keep out anything that rescales."""

    family: ClassVar[str] = "shapes_sizes"

    name: str = "shapes_sizes"
    size_min: float = 6.0
    size_max: float = 54.0
    train_distribution: str = "long_tail"
    views: int = 2
    view_augment: list[Any] = field(default_factory=size_keeping_views)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.sizes()
        if self.views < 0:
            raise ValueError("data.views must be non-negative")
        steps_per_view(self.view_augment, self.views, "data.view_augment")

    def sizes(self) -> SizesConfig:
        """The generator config (validated)."""
        return SizesConfig(
            num_train=self.num_train,
            num_val=self.num_val,
            num_test=self.num_test,
            image_size=self.image_size,
            size_min=self.size_min,
            size_max=self.size_max,
            train_distribution=self.train_distribution,
            seed=self.seed,
        )


@DATAMODULES.register("shapes_sizes", ShapesSizesDataConfig)
class ShapesSizesDataModule(ItemsDataModule):
    """One shape per image, its size the regression target (generated on first use)."""

    name = "shapes_sizes"
    modalities = ("image",)
    pairs = ()

    def __init__(self, cfg: ShapesSizesDataConfig | None = None, tokenizer: Any = None) -> None:
        cfg = cfg or ShapesSizesDataConfig()
        super().__init__(cfg, tokenizer)
        self.view_steps = steps_per_view(cfg.view_augment, cfg.views, "data.view_augment")

    @property
    def views(self) -> dict[str, int]:
        return {"image": len(self.view_steps)} if self.view_steps else {}

    @property
    def labels(self) -> dict[str, int]:
        return {"shape": len(SHAPES), "color": len(COLORS)}

    @property
    def targets(self) -> tuple[str, ...]:
        return ("size",)

    def tower_context(self) -> dict[str, Any]:
        return {"image_size": self.cfg.image_size, "in_channels": 3}

    def _transforms(self, train: bool) -> dict[str, Transform]:
        steps = self.cfg.augment.train if train else self.cfg.augment.eval
        return {"image": SeededImageTransform(steps)}

    def _view_transforms(self) -> dict[str, list[Transform]]:
        return {"image": [SeededImageTransform(steps) for steps in self.view_steps]}
