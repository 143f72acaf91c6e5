"""Sources of the image-text family: the built-in shapes scenes, JSONL and COCO manifests, and
webdataset shards. Each hands over a split as an :class:`ImageTextSplit` and says which labels
the data has (class names, class-retrieval labels, zero-shot prompts)."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from datamodules.embedded.shapes import (
    COLORS,
    COUNT_WORDS,
    SHAPES,
    ensure_shapes,
    load_split,
    zero_shot_prompts,
)
from datamodules.errors import DataError, DataFileMissing
from datamodules.formats import (
    LabelColumn,
    LabelReader,
    ShardIndex,
    expand_shards,
    read_coco,
    read_jsonl,
    scan_shards,
)
from datamodules.media import IMAGE_ERRORS, MediaError, to_8bit
from datamodules.sources import SOURCES, EmbeddedSource, Source
from datamodules.sources.shapes import scenes_of
from datamodules.storage import SPLITS, Captions, FileCaptions, MappedArray


def _read_rgb(source: str | io.BytesIO, name: str, item: int, size: int) -> np.ndarray:
    """An image file (path or bytes) as RGB resized to ``size`` x ``size`` (the whole picture
    is kept rather than centre-cropped, so nothing a caption mentions is cut away); 16-bit and
    float images are scaled to 8 bits first (:func:`to_8bit`)."""
    try:
        with Image.open(source) as image:
            rgb = to_8bit(image).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    except FileNotFoundError:
        raise DataFileMissing(f"image file {name} (item {item}) not found") from None
    except IMAGE_ERRORS as err:  # not an image, truncated, ...
        raise MediaError(f"image file {name} (item {item}) could not be read: {err}") from None
    return np.asarray(rgb)


class FileImages:
    """Image files read with PIL as RGB and resized to ``size`` x ``size``."""

    def __init__(self, files: FileCaptions, size: int) -> None:
        self.files, self.size = files, size

    def __getitem__(self, i: int) -> np.ndarray:
        path = self.files.path(i)
        return _read_rgb(path, path, i, self.size)


class ShardImages:
    """Images stored in webdataset shards, read by byte offset, as RGB ``size`` x ``size``."""

    def __init__(self, index: ShardIndex, size: int) -> None:
        self.index, self.size = index, size

    def __getitem__(self, i: int) -> np.ndarray:
        return _read_rgb(io.BytesIO(self.index.read(i)), self.index.member(i), i, self.size)


class ItemSubset:
    """The images of chosen items of a split, renumbered: image ``i`` is ``images[keep[i]]``."""

    def __init__(self, images: Images, keep: np.ndarray) -> None:
        self.images, self.keep = images, keep

    def __getitem__(self, i: int) -> np.ndarray:
        return self.images[int(self.keep[i])]


Images = MappedArray | FileImages | ShardImages | ItemSubset


@dataclass(frozen=True)
class ImageTextSplit:
    """A split as the datamodule reads it: captions, images by item id, class ids by label,
    each item's hard-negative sibling item (-1: none) and, for data streamed by shard, the
    items of shard ``s`` at ``shard_items[s]:shard_items[s + 1]`` (None: map-style only)."""

    captions: Captions
    images: Images
    labels: Mapping[str, np.ndarray]
    siblings: np.ndarray
    shard_items: np.ndarray | None = None


def without_items(split: ImageTextSplit, drop: np.ndarray) -> ImageTextSplit:
    """``split`` without the items where ``drop`` [N] (bool) is set, the rest renumbered in
    order (captions, images, labels, siblings: a dropped sibling becomes -1). Map-style only."""
    if split.shard_items is not None:
        raise ValueError("dropping items needs a map-style data.format, not webdataset")
    keep = np.flatnonzero(~drop)
    offsets = split.captions.offsets
    texts = split.captions.all_texts()
    captions = Captions.from_lists([texts[offsets[i] : offsets[i + 1]] for i in keep])
    renumber = np.full(len(drop), -1, dtype=np.int64)
    renumber[keep] = np.arange(len(keep))
    siblings = split.siblings[keep]
    siblings = np.where(siblings >= 0, renumber[np.maximum(siblings, 0)], -1)
    labels = {name: np.asarray(ids)[keep] for name, ids in split.labels.items()}
    return ImageTextSplit(captions, ItemSubset(split.images, keep), labels, siblings)


class ImageTextSource(Source[ImageTextSplit]):
    """What every image-text source says about its labels; the defaults serve data on disk."""

    def label_classes(self) -> dict[str, list[str] | None]:
        """Label -> its class names in id order (None: class ids without names)."""
        raise NotImplementedError

    def class_names(self) -> dict[str, list[str]]:
        """The labels with class names."""
        return {f: names for f, names in self.label_classes().items() if names is not None}

    def class_retrieval_labels(self) -> tuple[str, ...]:
        """Labels whose combination is an item's class: all of them."""
        return tuple(self.label_classes())

    def zero_shot_tasks(self) -> dict[str, list[str]] | dict[str, list[list[str]]]:
        """Per label with class names, per class one prompt per ``prompt_templates`` entry
        (the evaluation averages a class's prompt embeddings: CLIP's ensemble)."""
        templates = self.cfg.prompt_templates
        return {
            field: [[template.replace("{c}", name) for template in templates] for name in names]
            for field, names in self.class_names().items()
        }


@SOURCES.register("image_text", "embedded")
class EmbeddedShapes(EmbeddedSource[ImageTextSplit], ImageTextSource):
    """The built-in shapes scenes: labels shape, colour and count of the main object."""

    name = "shapes"
    generator_of = staticmethod(scenes_of)
    ensure = staticmethod(ensure_shapes)

    @classmethod
    def check(cls, cfg: Any) -> None:
        if cfg.label_fields is not None or cfg.class_names:
            raise ValueError(
                "data.label_fields / data.class_names are for data on disk; the built-in data "
                "has its own labels"
            )

    def label_classes(self) -> dict[str, list[str] | None]:
        return {"shape": list(SHAPES), "color": list(COLORS), "count": list(COUNT_WORDS)}

    def class_retrieval_labels(self) -> tuple[str, ...]:
        """Shape x colour of the main object."""
        return ("shape", "color")

    def zero_shot_tasks(self) -> dict[str, list[str]]:
        """One prompt per class, in caption words."""
        return zero_shot_prompts()

    def _split(self, split: str) -> ImageTextSplit:
        directory = self.directory()
        data = load_split(directory, split)
        images = MappedArray(directory / f"{split}_images.npy")
        return ImageTextSplit(Captions.from_lists(data.captions), images, data.labels, data.sibling)


@dataclass(frozen=True)
class ReadSplit:
    """A split of data on disk as its reader gives it: label columns before class ids."""

    captions: Captions
    images: FileImages | ShardImages
    columns: dict[str, LabelColumn]
    shard_items: np.ndarray | None = None


class DiskImageText(ImageTextSource):
    """Data on disk: a subclass reads a split (``_read``) and says whether it is there
    (``has_split``); class names come from ``class_names`` or every split on disk."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._read_splits: dict[str, ReadSplit] = {}
        self._classes: dict[str, list[str] | None] | None = None

    def has_split(self, split: str) -> bool:
        """Whether ``split`` is there to read."""
        raise NotImplementedError

    def _read(self, split: str, root: Path, labels: LabelReader) -> ReadSplit:
        raise NotImplementedError

    def read(self, split: str) -> ReadSplit:
        """``split`` as read (and checked) once."""
        if split not in self._read_splits:
            root = self.root()
            self._read_splits[split] = self._read(
                split, root, LabelReader(self.cfg.labelled_fields())
            )
        return self._read_splits[split]

    def label_classes(self) -> dict[str, list[str] | None]:
        """Names are ``class_names.<field>``, else the sorted names found in every split on
        disk, so a class has one id in train, val and test. With ``label_fields`` unset,
        ``label`` counts only where some entry has it; a named field no entry has is an error.
        """
        if self._classes is None:
            self._classes = self._find_classes()
        return self._classes

    def _find_classes(self) -> dict[str, list[str] | None]:
        """Reads the label columns of every split on disk unless every field's names are given."""
        cfg = self.cfg
        fields = cfg.labelled_fields()
        named = all(f in cfg.class_names for f in fields)
        splits = [] if named else [s for s in SPLITS if self.has_split(s)]
        columns = {split: self.read(split).columns for split in splits}
        classes: dict[str, list[str] | None] = {}
        for f in fields:
            if f in cfg.class_names:
                classes[f] = list(cfg.class_names[f])
                continue
            found = {split: cols[f] for split, cols in columns.items() if cols[f].values}
            if not found:
                if cfg.label_fields is None:
                    continue
                raise DataError(
                    f"data.label_fields names {f!r}, but no entry of the {'/'.join(splits)} "
                    f"data at {cfg.root} has it"
                )
            kinds = {split: col.names for split, col in found.items()}
            if len(set(kinds.values())) > 1:
                raise DataError(
                    f"label {f!r} holds class names in some splits and class ids in others: "
                    + ", ".join(f"{s}: {'names' if k else 'ids'}" for s, k in kinds.items())
                )
            names = set().union(*(col.values for col in found.values()))
            classes[f] = sorted(names) if next(iter(kinds.values())) else None
        return classes

    def _split(self, split: str) -> ImageTextSplit:
        read = self.read(split)
        labels = {f: read.columns[f].ids(f, names) for f, names in self.label_classes().items()}
        siblings = np.full(read.captions.num_items, -1, np.int64)
        return ImageTextSplit(read.captions, read.images, labels, siblings, read.shard_items)


class ManifestImageText(DiskImageText):
    """Image files listed in a manifest per split (``<split>_manifest``, default
    ``default_manifest``), their paths relative to ``<split>_images``."""

    default_manifest: ClassVar[str] = ""
    reader: ClassVar[Callable[..., Any]]

    def manifest(self, split: str) -> Path:
        name = getattr(self.cfg, f"{split}_manifest") or self.default_manifest.format(split=split)
        return Path(self.cfg.root or "") / name

    def has_split(self, split: str) -> bool:
        return self.manifest(split).is_file()

    def _read(self, split: str, root: Path, labels: LabelReader) -> ReadSplit:
        image_dir = root / getattr(self.cfg, f"{split}_images")
        files = type(self).reader(self.manifest(split), image_dir, labels)
        keys = [key.decode("utf-8") for key in files.keys]
        return ReadSplit(
            files.captions, FileImages(files, self.cfg.image_size), labels.columns(keys)
        )


@SOURCES.register("image_text", "jsonl")
class JsonlImageText(ManifestImageText):
    """One JSON line per image (datamodules/formats/jsonl.py)."""

    default_manifest = "{split}.jsonl"
    reader = staticmethod(read_jsonl)


@SOURCES.register("image_text", "coco")
class CocoImageText(ManifestImageText):
    """COCO captions annotations (datamodules/formats/coco.py)."""

    default_manifest = "annotations/captions_{split}.json"
    reader = staticmethod(read_coco)

    @classmethod
    def check(cls, cfg: Any) -> None:
        """Every split names its image folder: COCO's ``file_name`` holds none, so an unset one
        would fail only later, image by image."""
        missing = [
            f"data.{split}_images" for split in SPLITS if not getattr(cfg, f"{split}_images")
        ]
        if missing:
            raise ValueError(
                f"{', '.join(missing)}: data.format coco needs each split's image folder, "
                "relative to data.root ('.' for data.root itself)"
            )


@SOURCES.register("image_text", "webdataset")
class WebdatasetImageText(DiskImageText):
    """Tar shards per split (``<split>_shards``), streamed in training
    (datamodules/formats/webdataset.py)."""

    @classmethod
    def check(cls, cfg: Any) -> None:
        if cfg.sibling_batches:
            raise ValueError("data.sibling_batches needs a map-style format, not webdataset")
        if not cfg.train_shards:
            raise ValueError("data.train_shards: data.format webdataset needs the training shards")

    def has_split(self, split: str) -> bool:
        return getattr(self.cfg, f"{split}_shards") is not None

    def _read(self, split: str, root: Path, labels: LabelReader) -> ReadSplit:
        pattern = getattr(self.cfg, f"{split}_shards")
        if pattern is None:
            raise ValueError(f"data.format webdataset needs data.{split}_shards")
        index = scan_shards(expand_shards(pattern, root, f"data.{split}_shards"), labels)
        return ReadSplit(
            index.captions,
            ShardImages(index, self.cfg.image_size),
            labels.columns(range(index.captions.num_items)),
            index.shard_items,
        )
