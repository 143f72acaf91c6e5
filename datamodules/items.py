"""Datamodules for items that are not a pair: any set of modalities, V augmented views of a
modality, class labels and continuous targets.

A family's source (shapes_views, shapes_sounds, shapes_sizes: datamodules/sources/shapes.py)
hands over each split as an :class:`ItemSplit` (the raw arrays of item ``i``, its captions,
labels, targets); the family says how the raw arrays become tensors; :class:`ItemDataset`
makes one sample per item and :class:`ItemsDataModule` builds the loaders with the samplers
of ``datamodules.base``, so batches behave as the pair datamodules' do: global batch sizes
sliced over ranks (:class:`~datamodules.samplers.RankSlices`), evaluation sharded with
:class:`~datamodules.samplers.EvalShard`, resumable training epochs, the last partial training
batch dropped, everything seeded.

Batch keys: the modality keys (``image`` float32 [B, 3, S, S] in [-1, 1], ``audio`` float32
[B, n_mels, frames], text as ``text_ids`` / ``text_mask`` [B, L]); in training only, views
``<modality>@<v>`` (each an independent augmentation draw of the same item); ``label/<task>``
long [B]; ``target/<name>`` float32 [B]; ``index`` and ``item_id`` long [B] (both the item id:
one sample per item); ``skipped`` (list of strings, see ``PairDataset``).

Every random choice of a training sample (its augmentation draws, which caption) comes from
one seed per sample drawn with the order generator (:class:`SeededBatches`), so W ranks load
exactly the global batch that one process loads, views included, and a resumed epoch redraws
what the interrupted one drew.
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.base import SplitsDataModule
from datamodules.config import SourceDataConfig
from datamodules.pairs import TokenizeCollate
from datamodules.samplers import SeededBatches
from datamodules.storage import BAD_FILE_ERRORS, Captions, MappedArray
from datamodules.transforms import ImageTransform, to_tensor

log = logging.getLogger(__name__)


@dataclass
class ItemsDataConfig(SourceDataConfig):
    """Fields every items family shares (the meaning of ImageTextDataConfig's same fields)."""

    name: str = "items"
    image_size: int = 64


class Transform(Protocol):
    """Raw array of one modality (and a seed for its random draws; None: no seed) -> tensor."""

    def __call__(self, raw: Any, seed: int | None) -> torch.Tensor: ...


def as_float(raw: Any, seed: int | None = None) -> torch.Tensor:
    """A raw array (e.g. a stored log-mel) as a float32 tensor; nothing random."""
    return torch.as_tensor(np.asarray(raw, dtype=np.float32))


class SeededImageTransform(ImageTransform):
    """:class:`~datamodules.transforms.ImageTransform` whose random draws come from a seed
    given per call (None: the pipeline's own random state). With ``keep_shape=False`` the
    pipeline may change the image size: a view cropped and resized to a smaller size
    (multi-crop); every output of one pipeline must then have the same size, which
    :meth:`output_shape` reports."""

    def __init__(
        self, steps: Sequence[Mapping[str, Any]] | None = None, keep_shape: bool = True
    ) -> None:
        super().__init__(steps)
        self.keep_shape = keep_shape

    def __call__(self, pixels: np.ndarray, seed: int | None = None) -> torch.Tensor:
        if seed is not None and self.pipeline is not None:
            self.pipeline.set_random_seed(seed)
        if self.keep_shape or self.pipeline is None:
            return super().__call__(pixels)
        return to_tensor(self.pipeline(image=np.asarray(pixels))["image"])

    def output_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The tensor shape ``[C, H, W]`` this transform makes of an ``image_shape`` image."""
        return tuple(self(np.zeros(image_shape, np.uint8), 0).shape)


def steps_per_view(steps: Sequence[Any], count: int, what: str) -> list[list[Any]]:
    """``count`` albumentations step lists from ``steps``: either one step list (every item a
    ``{name: ...}`` mapping), used for every view, or a list of ``count`` step lists, one per
    view. ``what`` names the config field in errors."""
    if all(isinstance(step, Mapping) for step in steps):
        return [list(steps) for _ in range(count)]
    if all(isinstance(s, Sequence) and not isinstance(s, str) for s in steps):
        if len(steps) != count:
            raise ValueError(f"{what} has {len(steps)} step lists for {count} views")
        return [list(s) for s in steps]
    raise ValueError(f"{what} must be one list of steps or one list of steps per view")


class MappedItems:
    """Item id -> ``{key: row}`` from memory-mapped ``.npy`` files (each a
    :class:`~datamodules.base.MappedArray`, so it pickles as paths for workers and ranks)."""

    def __init__(self, arrays: Mapping[str, MappedArray]) -> None:
        self.arrays = dict(arrays)

    def __call__(self, item: int) -> dict[str, np.ndarray]:
        return {key: array[item] for key, array in self.arrays.items()}


@dataclass(frozen=True)
class ItemSplit:
    """One split as a family hands it over: ``load(item)`` -> the item's raw arrays by
    modality (e.g. ``{"image": uint8 [H, W, 3]}``); ``captions`` (a text modality) with at
    least one caption per item; ``labels`` task -> int64 [N]; ``targets`` name -> float32 [N]."""

    num_items: int
    load: Callable[[int], dict[str, Any]]
    captions: Captions | None = None
    labels: Mapping[str, np.ndarray] = field(default_factory=dict)
    targets: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.captions is not None and self.captions.num_items != self.num_items:
            raise ValueError(f"{self.captions.num_items} caption groups for {self.num_items} items")
        for name, values in {**self.labels, **self.targets}.items():
            if len(values) != self.num_items:
                raise ValueError(f"{name!r} has {len(values)} values for {self.num_items} items")


class ItemDataset(Dataset):
    """One sample per item: ``transforms[key](raw[key])`` for each output modality key (a raw
    key without a transform is not in the batch), ``<key>@<v>`` from ``views[key][v]`` (the
    V views of one item, each its own random draw), ``text`` (a caption: in ``train`` mode
    one drawn afresh per sample, else the item's first), ``index`` and ``item_id`` (the item),
    ``label/<task>`` (int), ``target/<name>`` (0-d float32 tensor) and ``skipped``.

    A sample index is an item id or ``(item id, seed)`` (:class:`SeededBatches`); in ``train``
    mode without a seed one is drawn from torch's RNG (seeded per worker and epoch by the
    DataLoader). The seed drives the caption choice and every transform's random draws, in a
    fixed order; evaluation mode passes no seed (its transforms should not be random).

    A bad item (:data:`~datamodules.base.BAD_FILE_ERRORS`) is replaced by the next one that
    loads, as in :class:`~datamodules.base.PairDataset`, and ``skipped`` names its error.
    """

    #: Items tried for one sample before the requested item's error is raised.
    max_attempts = 16

    def __init__(
        self,
        data: ItemSplit,
        transforms: Mapping[str, Transform],
        views: Mapping[str, Sequence[Transform]] | None = None,
        train: bool = False,
    ) -> None:
        self.data, self.transforms, self.train = data, dict(transforms), train
        self.views = {key: list(v) for key, v in (views or {}).items()}

    def __len__(self) -> int:
        return self.data.num_items

    def _load(self, item: int) -> tuple[int, dict[str, Any], list[Exception]]:
        """The raw arrays of ``item``, or of the next item that loads, and the errors met."""
        first, errors = item, []
        while True:
            try:
                return item, self.data.load(item), errors
            except BAD_FILE_ERRORS as err:
                errors.append(err)
                if len(errors) >= min(self.max_attempts, self.data.num_items):
                    errors[0].add_note(f"none of {len(errors)} items from item {first} on loaded")
                    raise errors[0] from None
                log.warning("skipped item %d: %s", item, err)
                item = (item + 1) % self.data.num_items

    def __getitem__(self, k: int | tuple[int, int]) -> dict[str, Any]:
        item, seed = (int(k[0]), int(k[1])) if isinstance(k, tuple | list) else (int(k), None)
        if self.train and seed is None:
            seed = int(torch.randint(2**62, ()).item())
        rng = np.random.default_rng(seed) if self.train else None

        def draw() -> int | None:
            return int(rng.integers(2**32)) if rng is not None else None

        item, raw, errors = self._load(item)
        sample: dict[str, Any] = {}
        captions = self.data.captions
        if captions is not None:
            lo, hi = int(captions.offsets[item]), int(captions.offsets[item + 1])
            sample["text"] = captions.text(lo + (int(rng.integers(hi - lo)) if rng else 0))
        for key, transform in self.transforms.items():
            sample[key] = transform(raw[key], draw())
        for key, views in self.views.items():
            for v, transform in enumerate(views):
                sample[f"{key}@{v}"] = transform(raw[key], draw())
        sample["index"] = sample["item_id"] = item
        for task, ids in self.data.labels.items():
            sample[f"label/{task}"] = int(ids[item])
        for name, values in self.data.targets.items():
            sample[f"target/{name}"] = torch.tensor(float(values[item]), dtype=torch.float32)
        sample["skipped"] = [str(err) for err in errors]
        return sample


class ItemCollate(TokenizeCollate):
    """:class:`~datamodules.pairs.TokenizeCollate` for items: tensors stacked (targets to
    float32 [B]), ints to long, ``text`` tokenized; the tokenizer may be None when the data
    has no text."""

    def __call__(self, samples: list[dict]) -> dict[str, Any]:
        if self.tokenizer is None and "text" in samples[0]:
            raise RuntimeError("samples carry text but no tokenizer was given")
        return super().__call__(samples)


class ItemsDataModule(SplitsDataModule):
    """Splits, tokenizer, loaders and the declared interface of an items family.

    A family sets ``name``, ``modalities`` and ``pairs``, overrides the declared properties
    that apply (``views``, ``labels``, ``targets``, ``zero_shot_tasks``,
    ``class_retrieval_labels``) and implements ``tower_context``, ``_transforms(train)`` (raw
    -> tensor per batch key) and, with views, ``_view_transforms()``; its registered source
    (datamodules/sources) hands over the splits.

    Batch sizes are global and the trainer must not replace the samplers
    (``use_distributed_sampler=False``), as for ``PairDataModule``.
    """

    name = "items"
    #: Encoder names, one per modality batch key (text: ``text_ids`` / ``text_mask``).
    modalities: tuple[str, ...] = ()
    #: Modality pairs to evaluate retrieval on (none for one modality).
    pairs: tuple[tuple[str, str], ...] = ()

    def __init__(self, cfg: Any, tokenizer: Any = None) -> None:
        """``cfg``: the family's data block (an :class:`ItemsDataConfig`); ``tokenizer``: the
        text encoder's (data with a text modality)."""
        super().__init__(cfg, tokenizer)
        self._probes: dict[str, ItemDataset] = {}

    # -- declared interface --------------------------------------------------------------------
    def train_targets(self, name: str) -> np.ndarray:
        """float32 [N]: the training split's values of ``target/<name>`` (for shot regions)."""
        if name not in self.targets:
            raise KeyError(f"no target {name!r}; the data has {self.targets}")
        return np.asarray(self.source.split("train").targets[name], dtype=np.float32)

    # -- family hooks --------------------------------------------------------------------------
    def _transforms(self, train: bool) -> dict[str, Transform]:
        raise NotImplementedError

    def _view_transforms(self) -> dict[str, list[Transform]]:
        return {}

    # -- splits --------------------------------------------------------------------------------
    def num_items(self, split: str) -> int:
        return self.source.split(split).num_items

    def training_texts(self) -> list[str]:
        """Every training caption: what a word-level tokenizer learns its vocabulary from (the
        tokenizer belongs to the text encoder: ``modules.towers.build_tokenizer``)."""
        captions = self.source.split("train").captions
        if captions is None:
            raise RuntimeError(f"{self.name} has no captions")
        return captions.all_texts()

    def _dataset(self, split: str, train: bool | None = None) -> ItemDataset:
        """``split`` as its stage sees it (training: views and random captions), or with
        ``train=False`` as evaluation does."""
        train = split == "train" if train is None else train
        views = self._view_transforms() if train else {}
        return ItemDataset(self.source.split(split), self._transforms(train), views, train)

    def describe(self) -> str:
        """One line for logs: source, loaded split sizes and training views."""
        sizes = ", ".join(f"{split} {len(ds)} items" for split, ds in self.datasets.items())
        views = "".join(f"; {key} x{v} views" for key, v in self.views.items())
        return f"{self.name} ({self.source.describe()}): {sizes or 'not set up'}{views}"

    # -- loaders -------------------------------------------------------------------------------
    def _collate_with(self, tokenizer: Any, train: bool) -> ItemCollate:
        return ItemCollate(tokenizer)

    def _train_batches(
        self, split: str, dataset: ItemDataset, generator: torch.Generator
    ) -> SeededBatches:
        """Random global batches with one seed per sample (from the same generator) for the
        sample's random choices: views and captions then do not depend on the rank."""
        return SeededBatches(super()._train_batches(split, dataset, generator), generator)

    def probe_loader(self, split: str, shard: bool = False) -> DataLoader:
        """The items of ``split`` in order as evaluation sees them (no augmentation, no views,
        first caption): e.g. the training set as a k-NN / linear-probe bank. Every item on
        this process, or with ``shard`` this rank's :class:`EvalShard` share."""
        if split not in self._probes:
            self._probes[split] = self._dataset(split, train=False)
        dataset = self._probes[split]
        common = dict(num_workers=self.num_workers, collate_fn=self._collate())
        if shard:
            return self._eval_loader(dataset, **common)
        return DataLoader(dataset, batch_size=self.eval_batch_size, **common)
