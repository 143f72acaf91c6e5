"""Image-text pairs: the built-in shapes scenes, or a JSONL / COCO / webdataset dataset on disk.

Batches: ``image`` float32 [B, 3, S, S] in [-1, 1], ``text_ids`` / ``text_mask`` [B, L],
``index`` (caption id in the split), ``item_id`` (image id in the split, shared by the
captions of one image) and class labels ``label/<field>`` (long, -1: none): for the built-in
data ``label/shape``, ``label/color``, ``label/count``; for data on disk the fields named by
``label_fields`` (see :meth:`ImageTextDataModule.label_classes`). Training draws one caption per
image per epoch (``train_pairs: image``) or uses every pair (``caption``); validation and test
always iterate over every pair in order. Webdataset shards stream the training split (see
datamodules/formats/webdataset.py).
With ``languages: K > 1`` every caption also comes in K synthetic parallel languages
(``text_ids_k`` / ``text_mask_k`` [B, K, L], image-major; see datamodules/languages.py).
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from datamodules.config import SourceDataConfig
from datamodules.embedded.shapes import (
    COLORS,
    COUNT_WORDS,
    SHAPES,
    ShapesConfig,
    ensure_shapes,
    load_split,
    zero_shot_prompts,
)
from datamodules.formats import (
    LabelColumn,
    LabelReader,
    ShardIndex,
    ShardStream,
    StreamLoader,
    expand_shards,
    read_coco,
    read_jsonl,
    scan_shards,
)
from datamodules.languages import SyntheticLanguages
from datamodules.media import IMAGE_ERRORS, MediaError
from datamodules.pairs import TRAIN_PAIRS, PairDataModule, PairDataset, TokenizeCollate
from datamodules.storage import SPLITS, Captions, FileCaptions, MappedArray, cache_root
from datamodules.transforms import ImageTransform
from modules.registry import DATAMODULES

FORMATS = ("embedded", "jsonl", "coco", "webdataset")
#: The first half of CLIP's CIFAR-10 prompt list (as in CLIP_benchmark's cifar10 templates).
DEFAULT_PROMPT_TEMPLATES = (
    "a photo of a {c}.",
    "a blurry photo of a {c}.",
    "a black and white photo of a {c}.",
    "a low contrast photo of a {c}.",
    "a high contrast photo of a {c}.",
    "a bad photo of a {c}.",
    "a good photo of a {c}.",
    "a photo of a small {c}.",
    "a photo of a big {c}.",
)


@dataclass
class ImageTextDataConfig(SourceDataConfig):
    """Data block of an experiment. ``num_*`` and ``hard_negative_fraction`` shape the built-in
    data; ``root``, ``*_manifest``, ``*_images`` and ``*_shards`` locate a real one."""

    formats: ClassVar[tuple[str, ...]] = FORMATS

    name: str = "image_text"
    # manifest per split, relative to root; None: "<split>.jsonl" or
    # "annotations/captions_<split>.json"
    train_manifest: str | None = None
    val_manifest: str | None = None
    test_manifest: str | None = None
    # directory (relative to root) that a split's image paths are relative to
    train_images: str = ""
    val_images: str = ""
    test_images: str = ""
    # webdataset: tar shards per split, a brace pattern relative to root, e.g.
    # "train-{000000..000009}.tar"
    train_shards: str | None = None
    val_shards: str | None = None
    test_shards: str | None = None
    # webdataset training: samples mixed within each loader worker's stream (webdataset's
    # shuffle(n)) on top of the per-epoch shard shuffle; 0 or 1: shard order only
    shuffle_buffer: int = 1000
    # class labels of data on disk: the fields of an entry (JSONL line, COCO image or caption,
    # webdataset .json) that hold its class name or id, batched as label/<field>; None: "label"
    # where the data has it
    label_fields: list[str] | None = None
    # field -> class names in id order; default: the sorted names found in every split on disk
    class_names: dict[str, list[str]] = field(default_factory=dict)
    # zero-shot prompts per class name "{c}", embedded and averaged per class (CLIP's ensemble)
    prompt_templates: list[str] = field(default_factory=lambda: list(DEFAULT_PROMPT_TEMPLATES))
    image_size: int = 64
    max_text_len: int = 40
    hard_negative_fraction: float = 0.25
    train_pairs: str = "image"  # image: one random caption per image per epoch | caption: all
    # train batches keep each hard-negative sibling pair together (needs train_pairs: image)
    sibling_batches: bool = False
    # K > 1: every caption in K synthetic parallel languages (datamodules/languages.py); batches
    # add text_ids_k / text_mask_k [B, K, L]; training text_ids hold one random language per
    # sample, evaluation text_ids language 0 (the original). 1: the data as it is.
    languages: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.train_pairs not in TRAIN_PAIRS:
            raise ValueError(f"data.train_pairs must be one of {TRAIN_PAIRS}")
        if self.sibling_batches and self.train_pairs != "image":
            raise ValueError("data.sibling_batches needs data.train_pairs: image")
        if self.sibling_batches and self.format == "webdataset":
            raise ValueError("data.sibling_batches needs a map-style format, not webdataset")
        if self.languages < 1:
            raise ValueError(f"data.languages must be at least 1, got {self.languages}")
        self._check_labels()

    def _check_labels(self) -> None:
        """Label fields, class names and prompt templates make sense together."""
        if self.format == "embedded" and (self.label_fields is not None or self.class_names):
            raise ValueError(
                "data.label_fields / data.class_names are for data on disk; the built-in data "
                "has its own labels"
            )
        fields = self.labelled_fields()
        if len(set(fields)) != len(fields) or not all(isinstance(f, str) and f for f in fields):
            raise ValueError(f"data.label_fields must be distinct field names, got {fields}")
        extra = sorted(set(self.class_names) - set(fields))
        if extra:
            raise ValueError(f"data.class_names has fields {extra} not in data.label_fields")
        for name, classes in self.class_names.items():
            if not classes or len(set(classes)) != len(classes):
                raise ValueError(f"data.class_names.{name} must list distinct names")
        templates = self.prompt_templates
        if not templates or not all(isinstance(t, str) and "{c}" in t for t in templates):
            raise ValueError("data.prompt_templates must be a non-empty list with {c} in each")

    def labelled_fields(self) -> list[str]:
        """The label fields to read: ``label_fields``, or ``["label"]`` when unset."""
        return list(self.label_fields) if self.label_fields is not None else ["label"]

    def manifest(self, split: str) -> Path:
        name = getattr(self, f"{split}_manifest")
        if name is None:
            name = (
                f"{split}.jsonl" if self.format == "jsonl" else f"annotations/captions_{split}.json"
            )
        return Path(self.root or "") / name

    def image_dir(self, split: str) -> Path:
        return Path(self.root or "") / getattr(self, f"{split}_images")

    def has_split(self, split: str) -> bool:
        """Whether a split of data on disk is there to read (its manifest or shards given)."""
        if self.format == "webdataset":
            return getattr(self, f"{split}_shards") is not None
        return self.manifest(split).is_file()


def _read_rgb(source: str | io.BytesIO, name: str, item: int, size: int) -> np.ndarray:
    """An image file (path or bytes) as RGB resized to ``size`` x ``size`` (the whole picture
    is kept rather than centre-cropped, so nothing a caption mentions is cut away)."""
    try:
        with Image.open(source) as image:
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    except FileNotFoundError:
        raise FileNotFoundError(f"image file {name} (item {item}) not found") from None
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


@dataclass(frozen=True)
class SplitSource:
    """A split read from disk: captions, images and the label columns as read."""

    captions: Captions
    images: FileImages | ShardImages
    labels: dict[str, LabelColumn]
    shard_items: np.ndarray | None = None  # webdataset: items of shard s are [s]:[s + 1]


class LoadImage:
    """Item id -> ``{"image": tensor}``: read, augment, convert."""

    def __init__(
        self, images: MappedArray | FileImages | ShardImages, transform: ImageTransform
    ) -> None:
        self.images, self.transform = images, transform

    def __call__(self, item: int) -> dict[str, torch.Tensor]:
        return {"image": self.transform(self.images[item])}


@DATAMODULES.register("image_text", ImageTextDataConfig)
class ImageTextDataModule(PairDataModule):
    """Image-caption pairs; with no arguments, the built-in shapes data (generated on first
    use into the cache)."""

    def __init__(self, cfg: ImageTextDataConfig | None = None, tokenizer: Any = None) -> None:
        cfg = cfg or ImageTextDataConfig()
        super().__init__(cfg, tokenizer)
        self.languages = SyntheticLanguages(cfg.languages)
        self.shapes: ShapesConfig | None = None
        if cfg.format == "embedded":
            self.shapes = ShapesConfig(
                num_train=cfg.num_train,
                num_val=cfg.num_val,
                num_test=cfg.num_test,
                image_size=cfg.image_size,
                hard_negative_fraction=cfg.hard_negative_fraction,
                seed=cfg.seed,
            )
        self._sources: dict[str, SplitSource] = {}
        self._classes: dict[str, list[str] | None] | None = None

    modalities = ("image", "text")

    def tower_context(self) -> dict[str, Any]:
        return {
            "image_size": self.cfg.image_size,
            "in_channels": 3,
            "max_text_len": self.cfg.max_text_len,
        }

    @property
    def class_retrieval_labels(self) -> tuple[str, ...]:
        """The built-in scenes' class: shape x colour of the main object; for data on disk,
        the combination of its label fields."""
        if self.shapes is not None:
            return ("shape", "color")
        return tuple(self.label_classes())

    @property
    def zero_shot_tasks(self) -> dict[str, list[str]] | dict[str, list[list[str]]]:
        """The built-in data: one prompt per class. Data on disk: per label field with class
        names, per class (in id order) one prompt per ``prompt_templates`` entry; the
        evaluation averages the normalised prompt embeddings of a class (CLIP's ensemble)."""
        if self.shapes is not None:
            return zero_shot_prompts()
        templates = self.cfg.prompt_templates
        return {
            field: [[template.replace("{c}", name) for template in templates] for name in names]
            for field, names in self.label_classes().items()
            if names is not None
        }

    def label_classes(self) -> dict[str, list[str] | None]:
        """Label field of the data on disk -> its class names in id order (None: integer class
        ids without names, which serve class retrieval but not zero-shot).

        Names are ``class_names.<field>``, else the sorted names found in every split on disk,
        so a class has one id in train, val and test. With ``label_fields`` unset, ``label``
        counts only where some entry has it; a named field that no entry has is an error.
        """
        if self._classes is None:
            self._classes = self._find_classes() if self.shapes is None else {}
        return self._classes

    def _find_classes(self) -> dict[str, list[str] | None]:
        """Reads the label columns of every split on disk unless every field's names are given."""
        fields = self.cfg.labelled_fields()
        named = all(f in self.cfg.class_names for f in fields)
        splits = [] if named else [s for s in SPLITS if self.cfg.has_split(s)]
        columns = {split: self._source(split).labels for split in splits}
        classes: dict[str, list[str] | None] = {}
        for f in fields:
            if f in self.cfg.class_names:
                classes[f] = list(self.cfg.class_names[f])
                continue
            found = {split: cols[f] for split, cols in columns.items() if cols[f].values}
            if not found:
                if self.cfg.label_fields is None:
                    continue
                raise ValueError(
                    f"data.label_fields names {f!r}, but no entry of the {'/'.join(splits)} "
                    f"data at {self.cfg.root} has it"
                )
            kinds = {split: col.names for split, col in found.items()}
            if len(set(kinds.values())) > 1:
                raise ValueError(
                    f"label {f!r} holds class names in some splits and class ids in others: "
                    + ", ".join(f"{s}: {'names' if k else 'ids'}" for s, k in kinds.items())
                )
            names = set().union(*(col.values for col in found.values()))
            classes[f] = sorted(names) if next(iter(kinds.values())) else None
        return classes

    @property
    def class_names(self) -> dict[str, list[str]]:
        """The built-in scenes' labels (shape and colour of the main object, object count), or
        the named label fields of data on disk."""
        if self.shapes is None:
            return {f: names for f, names in self.label_classes().items() if names is not None}
        return {"shape": list(SHAPES), "color": list(COLORS), "count": list(COUNT_WORDS)}

    def training_texts(self) -> list[str]:
        """As the base; with K > 1 languages, every language's version of them."""
        return self.languages.translate_all(super().training_texts())

    def prepare_data(self) -> None:
        """Generate the built-in data once (Lightning calls this on one process per node)."""
        if self.shapes is not None:
            ensure_shapes(self.shapes, cache_root(self.cfg.cache_dir))

    def describe(self) -> str:
        """One line for logs: source and loaded split sizes."""
        if self.shapes is not None:
            source = f"embedded shapes-{self.shapes.key()}"
        else:
            source = f"{self.cfg.format} at {self.cfg.root}"
        sizes = ", ".join(
            f"{split} {ds.captions.num_items} images / {len(ds.captions)} captions"
            for split, ds in self.datasets.items()
        )
        return f"image_text ({source}): {sizes or 'not set up'}"

    def train_dataloader(self) -> DataLoader:
        """Webdataset: the training split streamed by shard (:class:`ShardStream`); otherwise
        the base's global-batch loader."""
        if self.cfg.format != "webdataset":
            return super().train_dataloader()
        if "train" not in self.datasets or self.tokenizer is None:
            raise RuntimeError("split 'train' is not set up; call setup() first")
        if self._item_groups is not None:
            raise ValueError("batches drawn within item groups need a map-style data.format")
        dataset = self.datasets["train"]
        shard_samples = self._source("train").shard_items
        if dataset.pairs == "caption":
            shard_samples = dataset.captions.offsets[shard_samples]
        rank, world = self._rank_and_world()
        stream = ShardStream(
            dataset,
            shard_samples,
            self.batch_size,
            rank=rank,
            world=world,
            workers=self.num_workers,
            seed=self.seed,
            buffer=self.cfg.shuffle_buffer,
        )
        return StreamLoader(
            stream,
            epoch=self._trainer_epoch,
            consumed=self._batches_trained,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            collate_fn=TokenizeCollate(self.tokenizer),
            generator=torch.Generator().manual_seed(self.seed),
        )

    def _trainer_epoch(self) -> int | None:
        """The attached trainer's current epoch; None without a trainer."""
        trainer = getattr(self, "trainer", None)
        return None if trainer is None else trainer.current_epoch

    def _source(self, split: str) -> SplitSource:
        """A split of the data on disk, read (and checked) once."""
        if split not in self._sources:
            root = Path(self.cfg.root or "")
            if not root.is_dir():
                raise FileNotFoundError(f"data root {root} not found")
            labels = LabelReader(self.cfg.labelled_fields())
            size = self.cfg.image_size
            if self.cfg.format == "webdataset":
                pattern = getattr(self.cfg, f"{split}_shards")
                if pattern is None:
                    raise ValueError(f"data.format webdataset needs data.{split}_shards")
                index = scan_shards(expand_shards(pattern, root, f"data.{split}_shards"), labels)
                self._sources[split] = SplitSource(
                    index.captions,
                    ShardImages(index, size),
                    labels.columns(range(index.captions.num_items)),
                    index.shard_items,
                )
            else:
                read = read_jsonl if self.cfg.format == "jsonl" else read_coco
                files = read(self.cfg.manifest(split), self.cfg.image_dir(split), labels)
                keys = [key.decode("utf-8") for key in files.keys]
                self._sources[split] = SplitSource(
                    files.captions, FileImages(files, size), labels.columns(keys)
                )
        return self._sources[split]

    def _dataset(self, split: str) -> PairDataset:
        train = split == "train"
        transform = ImageTransform(self.cfg.augment.train if train else self.cfg.augment.eval)
        pairs = self.cfg.train_pairs if train else "caption"
        if self.shapes is not None:
            directory = ensure_shapes(self.shapes, cache_root(self.cfg.cache_dir))
            data = load_split(directory, split)
            images: MappedArray | FileImages | ShardImages = MappedArray(
                directory / f"{split}_images.npy"
            )
            captions, labels = Captions.from_lists(data.captions), data.labels
            self._siblings[split] = data.sibling
        else:
            source = self._source(split)
            images, captions = source.images, source.captions
            labels = {
                f: source.labels[f].ids(f, names) for f, names in self.label_classes().items()
            }
        return PairDataset(
            captions,
            LoadImage(images, transform),
            labels,
            pairs,
            languages=self.languages,
            random_language=train,
        )
