"""The built-in sources of the items families: the shapes scenes (``shapes_views``), the scenes
with their sounds (``shapes_sounds``) and one shape per image sized for regression
(``shapes_sizes``); each split handed over as an :class:`~datamodules.items.ItemSplit`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datamodules.embedded.shape_sizes import SizesConfig, ensure_sizes, load_record
from datamodules.embedded.shape_sounds import SoundsConfig, ensure_sounds
from datamodules.embedded.shapes import ShapesConfig, ensure_shapes, load_split
from datamodules.items import ItemSplit, MappedItems
from datamodules.sources import SOURCES, EmbeddedSource
from datamodules.storage import Captions, MappedArray, cache_root


def scenes_of(cfg: Any) -> ShapesConfig:
    """The shapes scenes of a data config with ``num_*``, ``image_size``,
    ``hard_negative_fraction`` and ``seed`` (validated by ``ShapesConfig``)."""
    return ShapesConfig(
        num_train=cfg.num_train,
        num_val=cfg.num_val,
        num_test=cfg.num_test,
        image_size=cfg.image_size,
        hard_negative_fraction=cfg.hard_negative_fraction,
        seed=cfg.seed,
    )


@SOURCES.register("shapes_views", "embedded")
class ShapesScenes(EmbeddedSource[ItemSplit]):
    """The scenes' images and labels."""

    name = "shapes"
    generator_of = staticmethod(scenes_of)
    ensure = staticmethod(ensure_shapes)

    def _split(self, split: str) -> ItemSplit:
        directory = self.directory()
        data = load_split(directory, split)
        images = MappedArray(directory / f"{split}_images.npy")
        return ItemSplit(len(data.captions), MappedItems({"image": images}), labels=data.labels)


def _ensure_sounds(generator: SoundsConfig, cache: Path) -> Path:
    """The sounds' cache directory, the scenes generated first."""
    return ensure_sounds(generator, cache, ensure_shapes(generator.scenes, cache))


@SOURCES.register("shapes_sounds", "embedded")
class ShapesSounds(EmbeddedSource[ItemSplit]):
    """The scenes' images, sounds, captions and labels."""

    ensure = staticmethod(_ensure_sounds)

    @staticmethod
    def generator_of(cfg: Any) -> SoundsConfig:
        return cfg.sounds()

    def describe(self) -> str:
        scenes = self.generator.scenes
        return f"embedded shapes-{scenes.key()} + shape-sounds-{self.generator.key()}"

    def _split(self, split: str) -> ItemSplit:
        sounds = self.directory()
        scenes = ensure_shapes(self.generator.scenes, cache_root(self.cfg.cache_dir))
        data = load_split(scenes, split)
        arrays = {
            "image": MappedArray(scenes / f"{split}_images.npy"),
            "audio": MappedArray(sounds / f"{split}_audio.npy"),
        }
        return ItemSplit(
            len(data.captions),
            MappedItems(arrays),
            captions=Captions.from_lists(data.captions),
            labels=data.labels,
        )


@SOURCES.register("shapes_sizes", "embedded")
class ShapeSizes(EmbeddedSource[ItemSplit]):
    """One shape per image: labels shape and colour, target size."""

    name = "shape-sizes"
    ensure = staticmethod(ensure_sizes)

    @staticmethod
    def generator_of(cfg: Any) -> SizesConfig:
        return cfg.sizes()

    def _split(self, split: str) -> ItemSplit:
        directory = self.directory()
        record = load_record(directory, split)
        images = MappedArray(directory / f"{split}_images.npy")
        return ItemSplit(
            len(record["size"]),
            MappedItems({"image": images}),
            labels={"shape": record["shape"], "color": record["color"]},
            targets={"size": record["size"]},
        )
