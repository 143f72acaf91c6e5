"""Image-text pairs: the built-in shapes scenes, or a JSONL / COCO dataset on disk.

Batches: ``image`` float32 [B, 3, S, S] in [-1, 1], ``text_ids`` / ``text_mask`` [B, L],
``index`` (caption id in the split), ``item_id`` (image id in the split, shared by the
captions of one image) and, for the built-in data, ``label/shape``, ``label/color``,
``label/count``. Training draws one caption per image per epoch (``train_pairs: image``) or
uses every pair (``caption``); validation and test always iterate over every pair in order.
With ``languages: K > 1`` every caption also comes in K synthetic parallel languages
(``text_ids_k`` / ``text_mask_k`` [B, K, L], image-major; see datamodules/languages.py).
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
from datamodules.languages import SyntheticLanguages
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
    # K > 1: every caption in K synthetic parallel languages (datamodules/languages.py); batches
    # add text_ids_k / text_mask_k [B, K, L]; training text_ids hold one random language per
    # sample, evaluation text_ids language 0 (the original). 1: the data as it is.
    languages: int = 1
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
        if self.languages < 1:
            raise ValueError(f"data.languages must be at least 1, got {self.languages}")
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

    modalities = ("image", "text")

    def tower_context(self) -> dict[str, Any]:
        return {
            "image_size": self.cfg.image_size,
            "in_channels": 3,
            "max_text_len": self.cfg.max_text_len,
        }

    @property
    def class_retrieval_labels(self) -> tuple[str, ...]:
        """The built-in scenes' class: shape x colour of the main object."""
        return ("shape", "color") if self.cfg.format == "embedded" else ()

    @property
    def zero_shot_tasks(self) -> dict[str, list[str]]:
        return zero_shot_prompts() if self.shapes is not None else {}

    def setup(self, stage: str | None = None) -> None:
        """As the base, but with K > 1 languages the tokenizer learns every language's words."""
        if self.tokenizer is None and self.languages.num > 1:
            if "train" not in self.datasets:
                self.datasets["train"] = self._dataset("train")
            texts = self.languages.translate_all(self.datasets["train"].captions.all_texts())
            self.tokenizer = WordTokenizer.build(texts, max_len=self.cfg.max_text_len)
        super().setup(stage)

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
        return PairDataset(
            captions,
            LoadImage(images, transform),
            labels,
            pairs,
            languages=self.languages,
            random_language=train,
        )
