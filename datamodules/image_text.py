"""Image-text pairs: the built-in shapes scenes, or a JSONL / COCO dataset on disk.

Batches: ``image`` float32 [B, 3, S, S] in [-1, 1], ``text_ids`` / ``text_mask`` [B, L],
``index`` (caption id in the split), ``item_id`` (image id in the split, shared by the
captions of one image) and, for the built-in data, ``label/shape``, ``label/color``,
``label/count``. Training draws one caption per image per epoch (``train_pairs: image``) or
uses every pair (``caption``); validation and test always iterate over every pair in order.
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from datamodules.base import (
    TRAIN_PAIRS,
    Captions,
    FileCaptions,
    MappedArray,
    PairDataModule,
    PairDataset,
    cache_root,
)
from datamodules.embedded.shapes import (
    ShapesConfig,
    ensure_shapes,
    load_split,
    zero_shot_prompts,
)
from datamodules.formats import read_coco, read_jsonl
from datamodules.media import IMAGE_ERRORS, MediaError
from datamodules.transforms import AugmentConfig, ImageTransform
from modules.registry import DATAMODULES
from modules.towers.tokenizer import WordTokenizer

FORMATS = ("embedded", "jsonl", "coco")


@dataclass
class ImageTextDataConfig:
    """Data block of an experiment. ``num_*`` and ``hard_negative_fraction`` shape the built-in
    data; ``root``, ``*_manifest`` and ``*_images`` locate a real one."""

    name: str = "image_text"
    format: str = "embedded"  # embedded | jsonl | coco
    root: str | None = None
    # manifest per split, relative to root; None: "<split>.jsonl" or
    # "annotations/captions_<split>.json"
    train_manifest: str | None = None
    val_manifest: str | None = None
    test_manifest: str | None = None
    # directory (relative to root) that a split's image paths are relative to
    train_images: str = ""
    val_images: str = ""
    test_images: str = ""
    batch_size: int = 64
    eval_batch_size: int = 256
    num_workers: int = 0
    image_size: int = 64
    max_text_len: int = 40
    num_train: int = 10000
    num_val: int = 1000
    num_test: int = 1000
    hard_negative_fraction: float = 0.25
    train_pairs: str = "image"  # image: one random caption per image per epoch | caption: all
    # train batches keep each hard-negative sibling pair together (needs train_pairs: image)
    sibling_batches: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    cache_dir: str | None = None
    seed: int = 0
    # training/evaluation stops (callbacks.data_health) when more than this fraction of the
    # samples had a bad file (missing, corrupt); below it bad files are skipped and logged
    max_skipped_fraction: float = 0.01

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_skipped_fraction <= 1.0:
            raise ValueError("data.max_skipped_fraction must be between 0 and 1")
        if self.format not in FORMATS:
            raise ValueError(f"data.format must be one of {FORMATS}, got {self.format!r}")
        if self.train_pairs not in TRAIN_PAIRS:
            raise ValueError(f"data.train_pairs must be one of {TRAIN_PAIRS}")
        if self.sibling_batches and self.train_pairs != "image":
            raise ValueError("data.sibling_batches needs data.train_pairs: image")
        if self.format != "embedded" and not self.root:
            raise ValueError(f"data.format {self.format!r} needs data.root")

    def manifest(self, split: str) -> Path:
        name = getattr(self, f"{split}_manifest")
        if name is None:
            name = (
                f"{split}.jsonl" if self.format == "jsonl" else f"annotations/captions_{split}.json"
            )
        return Path(self.root or "") / name

    def image_dir(self, split: str) -> Path:
        return Path(self.root or "") / getattr(self, f"{split}_images")


class FileImages:
    """Image files read with PIL as RGB and resized to ``size`` x ``size`` (the whole picture
    is kept rather than centre-cropped, so nothing a caption mentions is cut away)."""

    def __init__(self, files: FileCaptions, size: int) -> None:
        self.files, self.size = files, size

    def __getitem__(self, i: int) -> np.ndarray:
        path = self.files.path(i)
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BICUBIC)
        except FileNotFoundError:
            raise FileNotFoundError(f"image file {path} (item {i}) not found") from None
        except IMAGE_ERRORS as err:  # not an image, truncated, ...
            raise MediaError(f"image file {path} (item {i}) could not be read: {err}") from None
        return np.asarray(rgb)


class LoadImage:
    """Item id -> ``{"image": tensor}``: read, augment, convert."""

    def __init__(self, images: MappedArray | FileImages, transform: ImageTransform) -> None:
        self.images, self.transform = images, transform

    def __call__(self, item: int) -> dict[str, torch.Tensor]:
        return {"image": self.transform(self.images[item])}


@DATAMODULES.register("image_text", ImageTextDataConfig)
class ImageTextDataModule(PairDataModule):
    """Image-caption pairs; with no arguments, the built-in shapes data (generated on first
    use into the cache)."""

    def __init__(
        self, cfg: ImageTextDataConfig | None = None, tokenizer: WordTokenizer | None = None
    ) -> None:
        cfg = cfg or ImageTextDataConfig()
        super().__init__(cfg, tokenizer)
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

    modalities = ("image", "text")

    def tower_context(self) -> dict[str, Any]:
        return {
            "image_size": self.cfg.image_size,
            "in_channels": 3,
            "max_text_len": self.cfg.max_text_len,
        }

    @property
    def zero_shot_tasks(self) -> dict[str, list[str]]:
        return zero_shot_prompts() if self.shapes is not None else {}

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

    def _dataset(self, split: str) -> PairDataset:
        train = split == "train"
        transform = ImageTransform(self.cfg.augment.train if train else self.cfg.augment.eval)
        pairs = self.cfg.train_pairs if train else "caption"
        labels = None
        if self.shapes is not None:
            directory = ensure_shapes(self.shapes, cache_root(self.cfg.cache_dir))
            data = load_split(directory, split)
            images: MappedArray | FileImages = MappedArray(directory / f"{split}_images.npy")
            captions, labels = Captions.from_lists(data.captions), data.labels
            self._siblings[split] = data.sibling
        else:
            root = Path(self.cfg.root or "")
            if not root.is_dir():
                raise FileNotFoundError(f"data root {root} not found")
            read = read_jsonl if self.cfg.format == "jsonl" else read_coco
            files = read(self.cfg.manifest(split), self.cfg.image_dir(split))
            images, captions = FileImages(files, self.cfg.image_size), files.captions
        return PairDataset(captions, LoadImage(images, transform), labels, pairs)
