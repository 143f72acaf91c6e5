"""Augmented views of the built-in shapes scenes, for self-supervised methods (SimCLR, SwAV).

One modality, ``image``. Training batches carry only the views: ``image@0`` ...
``image@{views - 1}`` drawn with ``view_augment`` (default: a SimCLR-style recipe for the
scene size) and, for SwAV's multi-crop, ``small_views`` more, ``image@{views}`` ..., drawn with
``small_view_augment`` (default: small crops resized to half the scene size). Evaluation and
probe batches carry the plain ``image`` (``augment.eval``). Labels of the main object:
``label/shape`` (6), ``label/color`` (6), ``label/count`` (objects - 1: 3 classes); class
retrieval by shape x colour. The scenes are those of ``image_text`` with the same
``num_*``, ``image_size``, ``hard_negative_fraction`` and ``seed`` (one cache directory).

The default recipe keeps colour: crops (scale 0.25-1, so most views still show the main
object), horizontal flips, and brightness / contrast / saturation jitter, but no hue jitter and
no grayscale. SimCLR's hue jitter and grayscale make the views of one scene disagree on the
object's colour, and the objective then teaches the encoder to ignore colour, which is one of
the labels here (hue jitter of 0.1 turns red into pink and pink into purple); brightness and
contrast jitter stay, because without them two crops of a scene can be matched by their shared
background grey level alone.
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

from dataclasses import dataclass
from typing import Any, ClassVar

from datamodules.embedded.shapes import COLORS, COUNT_WORDS, SHAPES
from datamodules.items import (
    ItemsDataConfig,
    ItemsDataModule,
    SeededImageTransform,
    Transform,
    steps_per_view,
)
from datamodules.sources.shapes import scenes_of
from modules.registry import DATAMODULES

SHAPES_LABELS = {"shape": len(SHAPES), "color": len(COLORS), "count": len(COUNT_WORDS)}
#: Colour jitter that keeps the hue (see the module docstring).
KEEP_HUE_JITTER = {
    "name": "ColorJitter",
    "brightness": 0.4,
    "contrast": 0.4,
    "saturation": 0.4,
    "hue": 0.0,
    "p": 0.8,
}


def simclr_views(size: int) -> list[dict[str, Any]]:
    """The default view recipe for ``size`` x ``size`` scenes."""
    return [
        {"name": "RandomResizedCrop", "size": [size, size], "scale": [0.25, 1.0]},
        {"name": "HorizontalFlip", "p": 0.5},
        dict(KEEP_HUE_JITTER),
    ]


def small_crops(size: int) -> list[dict[str, Any]]:
    """The default multi-crop recipe: a 10-35 % crop of a ``size`` scene at half the size."""
    half = size // 2
    return [
        {"name": "RandomResizedCrop", "size": [half, half], "scale": [0.1, 0.35]},
        {"name": "HorizontalFlip", "p": 0.5},
        dict(KEEP_HUE_JITTER),
    ]


@dataclass
class ShapesViewsDataConfig(ItemsDataConfig):
    """``views`` full views and ``small_views`` multi-crop views per training item.
    ``view_augment`` / ``small_view_augment``: albumentations steps, one list used for every
    view or one list per view; None: :func:`simclr_views` / :func:`small_crops` of
    ``image_size``. ``augment.train`` must stay empty (training batches have no plain image)."""

    family: ClassVar[str] = "shapes_views"

    name: str = "shapes_views"
    hard_negative_fraction: float = 0.25
    views: int = 2
    view_augment: list[Any] | None = None
    small_views: int = 0
    small_view_augment: list[Any] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        scenes_of(self)
        # one view is supervised fine-tuning's augmented input (Core-tuning); methods that
        # contrast views check their own number (modules/simclr.py check_views)
        if self.views < 1 or self.small_views < 0:
            raise ValueError("data.views >= 1 and data.small_views >= 0")
        if self.augment.train:
            raise ValueError(
                "data.augment.train is unused: shapes_views training batches carry only views; "
                "set data.view_augment"
            )


@DATAMODULES.register("shapes_views", ShapesViewsDataConfig)
class ShapesViewsDataModule(ItemsDataModule):
    """V augmented views of the built-in shapes scenes (generated on first use)."""

    name = "shapes_views"
    modalities = ("image",)
    pairs = ()

    def __init__(self, cfg: ShapesViewsDataConfig | None = None, tokenizer: Any = None) -> None:
        cfg = cfg or ShapesViewsDataConfig()
        super().__init__(cfg, tokenizer)
        large = cfg.view_augment if cfg.view_augment is not None else simclr_views(cfg.image_size)
        small = cfg.small_view_augment
        small = small if small is not None else small_crops(cfg.image_size)
        self.view_steps = steps_per_view(large, cfg.views, "data.view_augment") + (
            steps_per_view(small, cfg.small_views, "data.small_view_augment")
            if cfg.small_views
            else []
        )

    @property
    def views(self) -> dict[str, int]:
        return {"image": len(self.view_steps)}

    @property
    def view_sizes(self) -> dict[str, int]:
        """View key -> side of its square image (full views first, then the small ones)."""
        shape = (self.cfg.image_size, self.cfg.image_size, 3)
        return {
            f"image@{v}": SeededImageTransform(steps, keep_shape=False).output_shape(shape)[-1]
            for v, steps in enumerate(self.view_steps)
        }

    @property
    def labels(self) -> dict[str, int]:
        return dict(SHAPES_LABELS)

    @property
    def class_retrieval_labels(self) -> tuple[str, ...]:
        return ("shape", "color")

    def tower_context(self) -> dict[str, Any]:
        return {"image_size": self.cfg.image_size, "in_channels": 3}

    def _transforms(self, train: bool) -> dict[str, Transform]:
        return {} if train else {"image": SeededImageTransform(self.cfg.augment.eval)}

    def _view_transforms(self) -> dict[str, list[Transform]]:
        return {"image": [SeededImageTransform(s, keep_shape=False) for s in self.view_steps]}
