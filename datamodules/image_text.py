"""Image-text pairs: the built-in shapes scenes, or a JSONL / COCO / webdataset dataset on disk.

Batches: ``image`` float32 [B, 3, S, S] in [-1, 1], ``text_ids`` / ``text_mask`` [B, L],
``index`` (caption id in the split), ``item_id`` (image id in the split, shared by the
captions of one image) and class labels ``label/<field>`` (long, -1: none): for the built-in
data ``label/shape``, ``label/color``, ``label/count``; for data on disk the fields named by
``label_fields`` (see :meth:`ImageTextDataModule.label_classes`). Training draws one caption per
image per epoch (``train_pairs: image``) or uses every pair (``caption``); validation and test
always iterate over every pair in order. Webdataset shards stream the training split (see
datamodules/formats/webdataset.py).
With ``languages: K > 1`` the collate's plug-in :class:`~datamodules.languages.ParallelLanguages`
adds every caption in K synthetic parallel languages (``text_ids_k`` / ``text_mask_k``
[B, K, L], image-major; see datamodules/languages.py).
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import DataLoader

from datamodules.config import SourceDataConfig
from datamodules.errors import DataError
from datamodules.formats import ShardStream, StreamLoader
from datamodules.languages import ParallelLanguages, SyntheticLanguages
from datamodules.pairs import TRAIN_PAIRS, PairDataModule, PairDataset, TokenizeCollate
from datamodules.sources.image_text import Images, ImageTextSource, ImageTextSplit, without_items
from datamodules.transforms import ImageTransform
from modules.registry import DATAMODULES

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
    data; ``root``, ``*_manifest``, ``*_images`` and ``*_shards`` locate a real one (the
    formats: datamodules/sources/image_text.py)."""

    family: ClassVar[str] = "image_text"

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
    # label -> class names whose items the training split leaves out (e.g. {color: [purple]}):
    # classes a stage never trains on, for evaluation on unseen classes (class_retrieval's
    # ``subsets``); validation and test keep every item
    train_exclude: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.train_pairs not in TRAIN_PAIRS:
            raise ValueError(f"data.train_pairs must be one of {TRAIN_PAIRS}")
        if self.sibling_batches and self.train_pairs != "image":
            raise ValueError("data.sibling_batches needs data.train_pairs: image")
        if self.languages < 1:
            raise ValueError(f"data.languages must be at least 1, got {self.languages}")
        self._check_labels()

    def _check_labels(self) -> None:
        """Label fields, class names and prompt templates make sense together."""
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


class LoadImage:
    """Item id -> ``{"image": tensor}``: read, augment, convert.

    The augmentation's random draws are seeded. In training, once per process, from torch's
    seed there (``torch.initial_seed()``): in a loader worker the DataLoader sets it from the
    loader's generator (``data.seed``) and the worker id, in the main process it is the run's
    seed; torch's RNG itself is not drawn from, so the caption draws stay as they were. In
    evaluation each item is its own seed, so every evaluation sees the same images. Left to
    itself an albumentations pipeline draws from a generator seeded by the OS: one seed gave
    other crops on every run, and forked workers started from one copied state. Seeding per
    process rather than per sample costs nothing per sample (a seeding is ~50 us, 2-3% of
    loading a 224 px JPEG).
    """

    def __init__(self, images: Images, transform: ImageTransform, train: bool) -> None:
        self.images, self.transform, self.train = images, transform, train
        self._seeded_in: int | None = None  # the process id that seeded the training pipeline

    def __call__(self, item: int) -> dict[str, torch.Tensor]:
        pixels = self.images[item]
        pipeline = self.transform.pipeline
        if pipeline is not None and not self.train:
            pipeline.set_random_seed(item)
        elif pipeline is not None and self._seeded_in != os.getpid():
            pipeline.set_random_seed(torch.initial_seed())
            self._seeded_in = os.getpid()
        return {"image": self.transform(pixels)}


@DATAMODULES.register("image_text", ImageTextDataConfig)
class ImageTextDataModule(PairDataModule):
    """Image-caption pairs; with no arguments, the built-in shapes data (generated on first
    use into the cache)."""

    source: ImageTextSource

    def __init__(self, cfg: ImageTextDataConfig | None = None, tokenizer: Any = None) -> None:
        cfg = cfg or ImageTextDataConfig()
        super().__init__(cfg, tokenizer)
        self.languages = SyntheticLanguages(cfg.languages)

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
        return self.source.class_retrieval_labels()

    @property
    def zero_shot_tasks(self) -> dict[str, list[str]] | dict[str, list[list[str]]]:
        """The built-in data: one prompt per class. Data on disk: per label field with class
        names, per class (in id order) one prompt per ``prompt_templates`` entry; the
        evaluation averages the normalised prompt embeddings of a class (CLIP's ensemble)."""
        return self.source.zero_shot_tasks()

    def label_classes(self) -> dict[str, list[str] | None]:
        """Label field -> its class names in id order (None: integer class ids without names,
        which serve class retrieval but not zero-shot); for data on disk see
        :meth:`~datamodules.sources.image_text.DiskImageText.label_classes`."""
        return self.source.label_classes()

    @property
    def class_names(self) -> dict[str, list[str]]:
        """The built-in scenes' labels (shape and colour of the main object, object count), or
        the named label fields of data on disk."""
        return self.source.class_names()

    def training_texts(self) -> list[str]:
        """As the base; with K > 1 languages, every language's version of them."""
        return self.languages.translate_all(super().training_texts())

    def describe(self) -> str:
        """One line for logs: source and loaded split sizes."""
        sizes = ", ".join(
            f"{split} {ds.captions.num_items} images / {len(ds.captions)} captions"
            for split, ds in self.datasets.items()
        )
        return f"image_text ({self.source.describe()}): {sizes or 'not set up'}"

    def _collate_with(self, tokenizer: Any, train: bool) -> TokenizeCollate:
        """With K > 1 languages, the samples' captions in every language first
        (:class:`~datamodules.languages.ParallelLanguages`)."""
        plugins = [ParallelLanguages(self.languages, train)] if self.languages.num > 1 else []
        return TokenizeCollate(tokenizer, plugins)

    def train_dataloader(self) -> DataLoader:
        """Data streamed by shard (webdataset): the training split by shard
        (:class:`ShardStream`); otherwise the base's global-batch loader."""
        if "train" not in self.datasets or self.source.split("train").shard_items is None:
            return super().train_dataloader()
        if self.tokenizer is None:
            raise RuntimeError("split 'train' is not set up; call setup() first")
        if self._item_groups is not None:
            raise ValueError("batches drawn within item groups need a map-style data.format")
        dataset, shard_samples = self.datasets["train"], self.source.split("train").shard_items
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
            collate_fn=self._collate_with(self.tokenizer, train=True),
            generator=torch.Generator().manual_seed(self.seed),
        )

    def _trainer_epoch(self) -> int | None:
        """The attached trainer's current epoch; None without a trainer."""
        trainer = getattr(self, "trainer", None)
        return None if trainer is None else trainer.current_epoch

    def _excluded(self, data: ImageTextSplit) -> np.ndarray:
        """Which items of ``data`` have a class of ``train_exclude``."""
        names = self.class_names
        drop = np.zeros(data.captions.num_items, dtype=bool)
        for label, excluded in self.cfg.train_exclude.items():
            if label not in names or label not in data.labels:
                raise DataError(f"data.train_exclude: the data has no named label {label!r}")
            unknown = sorted(set(excluded) - set(names[label]))
            if unknown:
                raise DataError(f"data.train_exclude: {label} has no classes {unknown}")
            ids = [names[label].index(name) for name in excluded]
            drop |= np.isin(np.asarray(data.labels[label]), ids)
        if drop.all():
            raise DataError("data.train_exclude leaves no training item")
        return drop

    def _dataset(self, split: str) -> PairDataset:
        train = split == "train"
        transform = ImageTransform(self.cfg.augment.train if train else self.cfg.augment.eval)
        pairs = self.cfg.train_pairs if train else "caption"
        data = self.source.split(split)
        if train and self.cfg.train_exclude:
            data = without_items(data, self._excluded(data))
        self._siblings[split] = data.siblings
        load = LoadImage(data.images, transform, train)
        return PairDataset(data.captions, load, dict(data.labels), pairs)
