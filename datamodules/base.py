"""Shared DataModule plumbing: cache location, compact caption index, pair dataset, loaders.

Every paired-modality datamodule (image-text, video-text, audio, medical) has items (an image,
a clip, a study) with one or more captions. :class:`Captions` keeps them as flat arrays rather
than Python objects, so dataloader workers and DDP ranks do not each copy a huge list;
:class:`PairDataset` turns items and captions into samples; :class:`TokenizeCollate` stacks
samples and tokenizes the text; :class:`PairDataModule` builds the loaders.
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    Subset,
)

from datamodules.languages import SyntheticLanguages
from datamodules.media import MediaError

log = logging.getLogger(__name__)

TRAIN_PAIRS = ("image", "caption")
SPLITS = ("train", "val", "test")
#: The splits each Lightning stage loads.
STAGE_SPLITS = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("test",),
}


def cache_root(cache_dir: str | None = None) -> Path:
    """``cache_dir``, else ``$ALIGNLAB_CACHE``, else ``~/.cache/alignlab``."""
    root = cache_dir or os.environ.get("ALIGNLAB_CACHE") or Path.home() / ".cache" / "alignlab"
    return Path(root).expanduser()


def pack_strings(strings: Sequence[str]) -> np.ndarray:
    """UTF-8 bytes in one fixed-width numpy array (no per-string Python objects)."""
    return np.array([s.encode("utf-8") for s in strings], dtype=np.bytes_)


class MappedArray:
    """Rows of a ``.npy`` file, memory-mapped on first use; pickles as its path, so dataloader
    workers and spawned ranks map the file instead of receiving a copy. ``add_channel`` appends
    a channel axis (grayscale ``[H, W]`` rows -> ``[H, W, 1]``)."""

    def __init__(self, path: Path, add_channel: bool = False) -> None:
        self.path, self.add_channel = path, add_channel
        self._array: np.ndarray | None = None

    def __getitem__(self, i: int) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        row = np.array(self._array[i])  # a writable copy of one row
        return row[..., None] if self.add_channel else row

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}


@dataclass(frozen=True)
class Captions:
    """Captions of one split: caption ``k`` is ``text(k)`` and describes item ``item[k]``;
    the captions of item ``i`` are ``offsets[i]:offsets[i + 1]``."""

    texts: np.ndarray  # bytes [C]
    item: np.ndarray  # int64 [C]
    offsets: np.ndarray  # int64 [N + 1]

    @classmethod
    def from_lists(cls, captions: Sequence[Sequence[str]]) -> Captions:
        """From one list of captions per item (each non-empty), in item order."""
        counts = np.array([len(c) for c in captions], dtype=np.int64)
        if (counts == 0).any():
            raise ValueError(f"item {int(np.argmin(counts))} has no caption")
        return cls(
            texts=pack_strings([text for group in captions for text in group]),
            item=np.repeat(np.arange(len(captions), dtype=np.int64), counts),
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        )

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_items(self) -> int:
        return len(self.offsets) - 1

    def text(self, k: int) -> str:
        return self.texts[k].decode("utf-8")

    def all_texts(self) -> list[str]:
        return [t.decode("utf-8") for t in self.texts]


@dataclass(frozen=True)
class FileCaptions:
    """A split read from disk: item ``i`` is the file ``path(i)`` (an image, a clip), known in
    the source as ``keys[i]`` (e.g. a COCO image id), with its captions in ``captions``."""

    paths: np.ndarray  # bytes [N]: absolute paths, UTF-8
    keys: np.ndarray  # bytes [N]
    captions: Captions

    def path(self, i: int) -> str:
        return self.paths[i].decode("utf-8")


#: Errors of a loader that mean "this sample's file is bad" (missing, unreadable, undecodable;
#: readers wrap decoder errors in ``MediaError`` naming the file). Programming errors
#: (``KeyError``, ``TypeError``, ...) are never among them.
BAD_FILE_ERRORS: tuple[type[Exception], ...] = (MediaError, OSError)


class PairDataset(Dataset):
    """(item, caption) samples.

    ``pairs="caption"``: one sample per caption, in caption order (evaluation sees every pair).
    ``pairs="image"``: one sample per item with a caption drawn afresh each time from torch's
    RNG (seeded per worker and epoch by the DataLoader), so a batch holds each item at most once.
    A sample is ``load(item)`` plus ``text``, ``index`` (caption id), ``<id_key>`` (item id),
    ``label/<task>`` from ``labels[task][item]`` and ``skipped``.

    An item whose file is bad (:data:`BAD_FILE_ERRORS`) is replaced by the next item that loads
    (``item + 1``, ``+ 2``, ... modulo the item count, at most ``max_attempts`` tries) with its
    first caption (``caption`` pairs) or a random one (``image`` pairs), so batches keep their
    size (contrastive losses under DDP gather equal batches). ``skipped`` lists the errors, each
    naming its file; callbacks.data_health counts them. In evaluation the replacement repeats
    a sample ``index`` that the metrics already drop as a duplicate.

    ``languages`` (K > 1 synthetic languages, datamodules/languages.py): a sample also has
    ``text_k``, its caption in all K languages (language 0 first); ``text`` stays language 0,
    or with ``random_language`` (training) is one language drawn afresh from torch's RNG, so a
    1-to-1 method sees every language.
    """

    #: Items tried for one sample before the requested item's error is raised.
    max_attempts = 16

    def __init__(
        self,
        captions: Captions,
        load: Callable[[int], dict[str, torch.Tensor]],
        labels: dict[str, np.ndarray] | None = None,
        pairs: str = "caption",
        id_key: str = "item_id",
        languages: SyntheticLanguages | None = None,
        random_language: bool = False,
    ) -> None:
        if pairs not in TRAIN_PAIRS:
            raise ValueError(f"pairs must be one of {TRAIN_PAIRS}, got {pairs!r}")
        self.captions, self.load, self.pairs, self.id_key = captions, load, pairs, id_key
        self.labels = labels or {}
        self.languages = languages if languages is not None and languages.num > 1 else None
        self.random_language = random_language

    def __len__(self) -> int:
        return len(self.captions) if self.pairs == "caption" else self.captions.num_items

    def _caption_of(self, item: int) -> int:
        """A random caption of ``item`` (``image`` pairs) or its first one."""
        lo, hi = int(self.captions.offsets[item]), int(self.captions.offsets[item + 1])
        return lo + int(torch.randint(hi - lo, ()).item()) if self.pairs == "image" else lo

    def __getitem__(self, k: int) -> dict:
        if self.pairs == "image":
            item = int(k)
            caption = self._caption_of(item)
        else:
            caption, item = int(k), int(self.captions.item[k])
        first = item
        errors: list[Exception] = []
        while True:
            try:
                sample = self.load(item)
                break
            except BAD_FILE_ERRORS as err:
                errors.append(err)
                if len(errors) >= min(self.max_attempts, self.captions.num_items):
                    errors[0].add_note(f"none of {len(errors)} items from item {first} on loaded")
                    raise errors[0] from None
                log.warning("skipped item %d: %s", item, err)
                item = (item + 1) % self.captions.num_items
                caption = self._caption_of(item)
        sample.update(text=self.captions.text(caption), index=caption, **{self.id_key: item})
        if self.languages is not None:
            sample["text_k"] = self.languages.parallel(sample["text"])
            if self.random_language:
                language = int(torch.randint(self.languages.num, ()).item())
                sample["text"] = sample["text_k"][language]
        for task, ids in self.labels.items():
            sample[f"label/{task}"] = int(ids[item])
        sample["skipped"] = [str(err) for err in errors]
        return sample


class TokenizeCollate:
    """Stacks tensors, turns ints into a long tensor, tokenizes ``text`` into ``text_ids`` and
    ``text_mask`` (the K parallel captions ``text_k`` into ``text_ids_k`` / ``text_mask_k``
    ``[B, K, L]``, padded together), and joins the samples' ``skipped`` lists into one list of
    strings (empty when every file loaded; a list, so batch transfer and micro-batch splitting
    leave it be)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, samples: list[dict]) -> dict[str, Any]:
        batch: dict[str, Any] = {}
        for key in samples[0]:
            values = [s[key] for s in samples]
            if key == "text":
                batch["text_ids"], batch["text_mask"] = self.tokenizer.encode(values)
            elif key == "text_k":
                ids, mask = self.tokenizer.encode([text for texts in values for text in texts])
                shape = (len(values), -1, ids.shape[1])
                batch["text_ids_k"], batch["text_mask_k"] = ids.view(shape), mask.view(shape)
            elif key == "skipped":
                batch[key] = [reason for reasons in values for reason in reasons]
            elif isinstance(values[0], torch.Tensor):
                batch[key] = torch.stack(values)
            else:
                batch[key] = torch.tensor(values, dtype=torch.long)
        return batch


class SiblingShuffle(Sampler[int]):
    """A fresh random order of the items every epoch in which the two items of each
    hard-negative sibling pair (``sibling[i]``: the other item, -1 for none) come one after the
    other, so they nearly always share a training batch: the contrastive loss then has to tell
    them apart (e.g. a clip from the same clip played backwards), which random batches almost
    never ask. Deterministic from ``seed``."""

    def __init__(self, sibling: np.ndarray, seed: int) -> None:
        self.sibling = np.asarray(sibling, dtype=np.int64)
        self.generator = torch.Generator().manual_seed(seed)
        items = np.arange(len(self.sibling))
        lead = (self.sibling < 0) | (self.sibling > items)  # a single, or a pair's first
        self.groups = [
            (int(i),) if self.sibling[i] < 0 else (int(i), int(self.sibling[i]))
            for i in items[lead]
        ]

    def __len__(self) -> int:
        return len(self.sibling)

    def __iter__(self):
        for g in torch.randperm(len(self.groups), generator=self.generator).tolist():
            group = self.groups[g]
            if len(group) == 2 and torch.rand((), generator=self.generator).item() < 0.5:
                group = group[::-1]
            yield from group


class GroupBatches(Sampler[list[int]]):
    """Global batches drawn within groups: every batch holds samples of one group only
    (``groups[k]``: the group of sample ``k``). Each epoch shuffles every group, cuts it into
    full batches (a group's remainder is dropped), and shuffles the batches of all groups
    together, as the batch sampler of MCL's official code does. Deterministic from ``seed``.
    Used for MCL's feature-aware negatives: the in-batch negatives of a sample all share its
    cluster."""

    def __init__(self, groups: np.ndarray, batch_size: int, seed: int) -> None:
        self.groups = np.asarray(groups, dtype=np.int64)
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.members = [np.flatnonzero(self.groups == g) for g in np.unique(self.groups)]
        if len(self) == 0:
            sizes = sorted(len(m) for m in self.members)
            raise ValueError(
                f"no group has batch_size {batch_size} samples (largest {sizes[-1]} of "
                f"{len(sizes)} groups): use fewer clusters or a smaller batch"
            )

    @property
    def sampler(self) -> GroupBatches:
        """Itself: its own generator is the order's (see ``ResumableLoader``)."""
        return self

    def __len__(self) -> int:
        return sum(len(m) // self.batch_size for m in self.members)

    def __iter__(self):
        batches = []
        for members in self.members:
            order = members[torch.randperm(len(members), generator=self.generator).numpy()]
            full = len(order) // self.batch_size * self.batch_size
            batches += np.split(order[:full], full // self.batch_size) if full else []
        for b in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[b].tolist()


class RankSlices(Sampler[list[int]]):
    """Each global batch of ``batches`` cut into ``world`` equal slices; rank ``r`` gets slice
    ``r``. Every rank draws the same global batches (same generator seed), so training on W
    ranks sees exactly the batches one process sees with the whole ``batch_size``: DDP's
    gradient average over the slices is the gradient of the global contrastive batch."""

    def __init__(self, batches: BatchSampler, rank: int, world: int) -> None:
        if batches.batch_size % world:
            raise ValueError(
                f"data.batch_size {batches.batch_size} is the global contrastive batch and must "
                f"divide evenly over {world} processes"
            )
        self.batches, self.rank, self.local = batches, rank, batches.batch_size // world
        #: Global batches to pass over (without loading them) in the next pass: a resumed epoch.
        self.skip = 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        start, skip, self.skip = self.rank * self.local, self.skip, 0
        for i, batch in enumerate(self.batches):
            if i >= skip:
                yield batch[start : start + self.local]


class ResumableLoader(DataLoader):
    """The training loader, able to continue an epoch after a restart (Lightning saves and
    restores its ``state_dict``): the state is the order generator as the epoch began and how
    many batches training has consumed, counted by ``consumed()`` (the trainer's count: the
    loader itself runs ahead by the batches it prefetched). Resuming restores the generator and
    passes over the consumed batches without loading them, so the rest of the epoch is the
    batches an uninterrupted run would have seen."""

    def __init__(self, *args: Any, consumed: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._consumed = consumed
        self._epoch_start: list[torch.Tensor] = []
        self._resume: dict[str, Any] | None = None

    def _generators(self) -> list[torch.Generator]:
        """The loader's generator and the order sampler's own one, if it has one."""
        own = getattr(self.batch_sampler.batches.sampler, "generator", None)
        return [self.generator] + ([own] if own is not None and own is not self.generator else [])

    def __iter__(self):
        if self._resume is not None:
            for generator, state in zip(
                self._generators(), self._resume["generators"], strict=True
            ):
                generator.set_state(state)
            self.batch_sampler.skip = int(self._resume["consumed"])
            self._resume = None
        self._epoch_start = [generator.get_state() for generator in self._generators()]
        return super().__iter__()

    def state_dict(self) -> dict[str, Any]:
        return {"generators": self._epoch_start, "consumed": self._consumed()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = state


class EvalShard(Sampler[int]):
    """Rank ``r``'s share ``r, r + W, ...`` of the samples in order, padded by repeating the first
    ones so every rank has the same count (collectives in the eval step need equal batches). The
    metrics drop the repeats by sample index, so W ranks report what one process does."""

    def __init__(self, size: int, rank: int, world: int) -> None:
        self.size, self.rank, self.world = size, rank, world
        self.per_rank = -(-size // world)

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self):
        padded = self.per_rank * self.world
        return iter([i % self.size for i in range(self.rank, padded, self.world)])


class PairDataModule(L.LightningDataModule):
    """Splits, tokenizer and loaders shared by every paired-modality datamodule.

    A subclass passes its data config and implements ``_dataset(split)``;
    ``setup`` loads the splits a stage needs (and the train split when the tokenizer must be
    built from its captions).

    Training shuffles with a generator seeded by ``seed`` and drops the last partial batch
    (a contrastive loss on a small remainder batch has few negatives and a different scale);
    evaluation keeps the order and every sample.

    Batch sizes are global: under DDP with W processes each rank loads ``batch_size / W`` rows
    of the same global batch (:class:`RankSlices`) and ``ceil(eval_batch_size / W)`` evaluation
    samples (:class:`EvalShard`), so a config means the same experiment on any number of
    devices. The trainer must not replace the samplers (``use_distributed_sampler=False``).
    """

    def __init__(self, cfg: Any, tokenizer: Any = None) -> None:
        """``cfg``: the data block (``batch_size``, ``eval_batch_size``, ``num_workers``,
        ``seed``, ``max_text_len`` and the subclass's own fields); ``tokenizer``: reuse one
        (e.g. from the checkpoint a stage starts from) instead of building it."""
        super().__init__()
        if cfg.batch_size < 1 or cfg.eval_batch_size < 1 or cfg.num_workers < 0:
            raise ValueError("batch sizes must be positive and num_workers non-negative")
        self.cfg = cfg
        self.batch_size, self.eval_batch_size = cfg.batch_size, cfg.eval_batch_size
        self.num_workers, self.seed = cfg.num_workers, cfg.seed
        self.tokenizer = tokenizer
        self.datasets: dict[str, PairDataset] = {}
        self._siblings: dict[str, np.ndarray] = {}
        self._item_groups: np.ndarray | None = None

    #: The modalities the data pairs, item side first (``item_id``), caption side second
    #: (``index``); each is a batch key fed to the tower of that name.
    modalities: tuple[str, ...] = ("image", "text")
    #: Training views per modality (none: pairs are one view of each side).
    views: dict[str, int] = {}
    #: Batches carry tokenized text (every caption family does, also when no tower reads it).
    needs_tokenizer = True

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """The modality pairs evaluated by retrieval: the data's one pair."""
        return ((self.modalities[0], self.modalities[1]),)

    @property
    def class_names(self) -> dict[str, list[str]]:
        """Task -> the name of each class, in label-id order (``label/<task>``); none by
        default."""
        return {}

    @property
    def labels(self) -> dict[str, int]:
        """Task -> number of classes of the batches' ``label/<task>``."""
        return {task: len(names) for task, names in self.class_names.items()}

    def num_items(self, split: str) -> int:
        """Items (images, clips, studies) of a loaded split."""
        return self.datasets[split].captions.num_items

    def tower_context(self) -> dict[str, Any]:
        """What towers must know about the inputs (see ``modules.towers.TowerContext``)."""
        raise NotImplementedError

    @property
    def zero_shot_tasks(self) -> dict[str, list[str]]:
        """Task -> one prompt per class, in label-id order; scored on the item-side embedding
        against ``label/<task>`` (none by default)."""
        return {}

    @property
    def zero_shot_binary_tasks(self) -> dict[str, tuple[str, str]]:
        """Task -> (negative prompt, positive prompt) for a yes/no finding; scored as AUROC of
        the item-side embedding's similarity difference against ``label/<task>`` in {0, 1}."""
        return {}

    @property
    def class_retrieval_labels(self) -> tuple[str, ...]:
        """Labels (``label/<name>``) whose combination is an item's class for item-to-item
        retrieval by class (``{stage}/class_retrieval/*``); none by default."""
        return ()

    @property
    def choice_tasks(self) -> dict[str, tuple[str, str]]:
        """Task -> (batch key, modality): a wrong candidate of that modality for each sample
        (e.g. a time-shifted clip). Scored as the fraction of samples whose true pair is more
        similar than the wrong candidate, anchored on the pair's other modality."""
        return {}

    def setup(self, stage: str | None = None) -> None:
        """Load the splits of ``stage`` (all for None), validating real manifests here in the
        main process."""
        splits = list(STAGE_SPLITS.get(stage or "", SPLITS))
        if self._needs_train_split() and "train" not in splits:
            splits.insert(0, "train")
        for split in splits:
            if split not in self.datasets:
                self.datasets[split] = self._dataset(split)

    def _needs_train_split(self) -> bool:
        """Whether ``setup`` must read the train split whatever the stage."""
        return False

    def training_texts(self) -> list[str]:
        """Every training caption: what a word-level tokenizer learns its vocabulary from (the
        tokenizer belongs to the text encoder: ``modules.towers.build_tokenizer``)."""
        if "train" not in self.datasets:
            self.datasets["train"] = self._dataset("train")
        return self.datasets["train"].captions.all_texts()

    def _collate(self) -> TokenizeCollate:
        if self.tokenizer is None:
            raise RuntimeError(
                f"{type(self).__name__} has no tokenizer: the text encoder owns it; set "
                "datamodule.tokenizer = modules.towers.build_tokenizer(model.text, "
                "datamodule.training_texts(), max_len)"
            )
        return TokenizeCollate(self.tokenizer)

    def _dataset(self, split: str) -> PairDataset:
        """The dataset of one split (subclasses)."""
        raise NotImplementedError

    def hard_negatives(self, split: str) -> np.ndarray:
        """``int64 [P, 2]`` item ids of the built-in data's hard-negative sibling pairs in a
        loaded split (the same content with one thing swapped or reversed); empty otherwise."""
        sibling = self._siblings.get(split, np.full(0, -1, dtype=np.int64))
        first = np.flatnonzero(sibling > np.arange(len(sibling)))
        return np.stack([first, sibling[first]], axis=1)

    def group_batches(self, item_groups: np.ndarray | None) -> None:
        """Draw training batches within groups of training items (``item_groups[i]``: the
        group of item ``i``; None: random batches again). See :class:`GroupBatches`."""
        if item_groups is not None:
            num_items = self.datasets["train"].captions.num_items
            if len(item_groups) != num_items:
                raise ValueError(f"{len(item_groups)} item groups for {num_items} train items")
        self._item_groups = item_groups

    def ordered_loader(self, split: str, indices: Sequence[int] | None = None) -> DataLoader:
        """Every sample of ``split`` (or those of ``indices``) in order on this process, not
        sharded (e.g. to embed the whole training set on each rank)."""
        dataset = self.datasets[split]
        return DataLoader(
            dataset if indices is None else Subset(dataset, list(indices)),
            batch_size=self.eval_batch_size,
            num_workers=self.num_workers,
            collate_fn=self._collate(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def _rank_and_world(self) -> tuple[int, int]:
        """(global rank, world size) of the attached trainer; (0, 1) without one."""
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, split: str, train: bool) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"split {split!r} is not set up; call setup() first")
        dataset = self.datasets[split]
        rank, world = self._rank_and_world()
        common = dict(
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            collate_fn=self._collate(),
        )
        if not train:
            return DataLoader(
                dataset,
                batch_size=-(-self.eval_batch_size // world),
                sampler=EvalShard(len(dataset), rank, world),
                **common,
            )
        if len(dataset) < self.batch_size:
            raise ValueError(
                f"train split has {len(dataset)} samples, fewer than batch_size "
                f"{self.batch_size}: every batch would be dropped"
            )
        # One generator drives the worker seeds and the order, as DataLoader(shuffle=True) does.
        generator = torch.Generator().manual_seed(self.seed)
        order: Sampler[int] = RandomSampler(dataset, generator=generator)
        if getattr(self.cfg, "sibling_batches", False):
            order = SiblingShuffle(self._siblings.get(split, np.full(len(dataset), -1)), self.seed)
        batches: BatchSampler | GroupBatches = BatchSampler(order, self.batch_size, drop_last=True)
        if self._item_groups is not None:
            items = np.arange(len(dataset)) if dataset.pairs == "image" else dataset.captions.item
            batches = GroupBatches(self._item_groups[items], self.batch_size, self.seed)
        return ResumableLoader(
            dataset,
            batch_sampler=RankSlices(batches, rank, world),
            generator=generator,
            consumed=self._batches_trained,
            **common,
        )

    def _batches_trained(self) -> int:
        """Training batches the attached trainer has processed in the current epoch."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0
        return trainer.fit_loop.epoch_loop.batch_progress.current.processed
