"""Items with captions (an image, a clip, a study and its captions or report): the pair
families' dataset, collate and datamodule.

:class:`PairDataset` turns items and captions into samples; :class:`TokenizeCollate` stacks
samples and tokenizes the text, after its plug-ins (e.g. the K parallel languages of
datamodules/languages.py) rewrite the samples; :class:`PairDataModule` is the shared datamodule
of the image-text, video-text, audio-visual and medical-report families.
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, Dataset, default_collate

from datamodules.base import SplitsDataModule
from datamodules.samplers import GroupBatches, SiblingShuffle
from datamodules.storage import BAD_FILE_ERRORS, Captions

log = logging.getLogger(__name__)

TRAIN_PAIRS = ("image", "caption")


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
    ) -> None:
        if pairs not in TRAIN_PAIRS:
            raise ValueError(f"pairs must be one of {TRAIN_PAIRS}, got {pairs!r}")
        self.captions, self.load, self.pairs, self.id_key = captions, load, pairs, id_key
        self.labels = labels or {}

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
        for task, ids in self.labels.items():
            sample[f"label/{task}"] = int(ids[item])
        sample["skipped"] = [str(err) for err in errors]
        return sample


#: A collate plug-in: the samples of a batch -> the samples to collate (new dicts; e.g. with
#: more text), for batching that a method asks for without a field of the shared dataset.
SamplesPlugin = Callable[[list[dict]], list[dict]]


class TokenizeCollate:
    """Runs its ``plugins`` over the samples in order, then stacks tensors, turns ints into a
    long tensor, tokenizes ``text`` into ``text_ids`` and ``text_mask`` (views of text
    ``text@<v>`` into ``text@<v>_ids`` / ``text@<v>_mask``; K parallel captions
    ``text_k`` into ``text_ids_k`` / ``text_mask_k`` ``[B, K, L]``, padded together), and joins
    the samples' ``skipped`` lists into one list of strings (empty when every file loaded; a
    list, so batch transfer and micro-batch splitting leave it be).

    Tensors are stacked by PyTorch's ``default_collate``: in a loader worker it writes the
    stack straight into shared memory, where a plain ``torch.stack`` result is copied there
    again when the batch is sent to the main process (a float image batch of 64 x 224 px is
    38 MB: that copy cost 6-9% of loading the batch from JPEG files with 1-2 workers, measured
    by benchmarks/data_path.py's loaders)."""

    def __init__(self, tokenizer: Any, plugins: Sequence[SamplesPlugin] = ()) -> None:
        self.tokenizer, self.plugins = tokenizer, tuple(plugins)

    def __call__(self, samples: list[dict]) -> dict[str, Any]:
        for plugin in self.plugins:
            samples = plugin(samples)
        batch: dict[str, Any] = {}
        for key in samples[0]:
            values = [s[key] for s in samples]
            if key == "text":
                batch["text_ids"], batch["text_mask"] = self.tokenizer.encode(values)
            elif key.startswith("text@"):  # a view of text: another sentence per sample
                batch[f"{key}_ids"], batch[f"{key}_mask"] = self.tokenizer.encode(values)
            elif key == "text_k":
                ids, mask = self.tokenizer.encode([text for texts in values for text in texts])
                shape = (len(values), -1, ids.shape[1])
                batch["text_ids_k"], batch["text_mask_k"] = ids.view(shape), mask.view(shape)
            elif key == "skipped":
                batch[key] = [reason for reasons in values for reason in reasons]
            elif isinstance(values[0], torch.Tensor):
                batch[key] = default_collate(values)  # in a worker: stacked in shared memory
            else:
                batch[key] = torch.tensor(values, dtype=torch.long)
        return batch


def warn_shared_captions(split: str, captions: Captions) -> None:
    """Warn when captions of ``split`` are word for word a caption of another item
    (templated or class-name captions): identical captions embed identically, so retrieval
    ties, counted pessimistically in ``R<K>`` and optimistically in ``R<K>_optimistic``."""
    count, example = captions.shared_across_items()
    if count:
        log.warning(
            "%s split: %d of %d captions are word for word a caption of another item (e.g. "
            "%r); retrieval reports R@K with pessimistic ties and R@K_optimistic",
            split,
            count,
            len(captions),
            example,
        )


class PairDataModule(SplitsDataModule):
    """The datamodule of items with captions: a subclass passes its data config and implements
    ``_dataset(split)`` (a :class:`PairDataset`) and ``tower_context()``; loaders, sharding and
    resumable epochs are the base's (datamodules/base.py)."""

    #: The modalities the data pairs, item side first (``item_id``), caption side second
    #: (``index``); each is a batch key fed to the tower of that name.
    modalities: tuple[str, ...] = ("image", "text")
    #: Batches carry tokenized text (every caption family does, also when no tower reads it).
    needs_tokenizer = True

    def __init__(self, cfg: Any, tokenizer: Any = None) -> None:
        super().__init__(cfg, tokenizer)
        self._siblings: dict[str, np.ndarray] = {}
        self._item_groups: np.ndarray | None = None
        self._checked: set[str] = set()

    def setup(self, stage: str | None = None) -> None:
        """As the base; warns once per split whose captions repeat across items."""
        super().setup(stage)
        for split, dataset in self.datasets.items():
            if split not in self._checked:
                self._checked.add(split)
                warn_shared_captions(split, dataset.captions)

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """The modality pairs evaluated by retrieval: the data's one pair."""
        return ((self.modalities[0], self.modalities[1]),)

    def num_items(self, split: str) -> int:
        """Items (images, clips, studies) of a loaded split."""
        return self.datasets[split].captions.num_items

    def training_texts(self) -> list[str]:
        """Every training caption: what a word-level tokenizer learns its vocabulary from (the
        tokenizer belongs to the text encoder: ``modules.towers.build_tokenizer``)."""
        if "train" not in self.datasets:
            self.datasets["train"] = self._dataset("train")
        return self.datasets["train"].captions.all_texts()

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

    def _collate_with(self, tokenizer: Any, train: bool) -> TokenizeCollate:
        return TokenizeCollate(tokenizer)

    def _train_batches(
        self, split: str, dataset: PairDataset, generator: torch.Generator
    ) -> BatchSampler | GroupBatches:
        """Random global batches; with ``sibling_batches`` each hard-negative sibling pair side
        by side; after ``group_batches`` batches within one group of items."""
        if self._item_groups is not None:
            items = np.arange(len(dataset)) if dataset.pairs == "image" else dataset.captions.item
            return GroupBatches(self._item_groups[items], self.batch_size, self.seed)
        if getattr(self.cfg, "sibling_batches", False):
            order = SiblingShuffle(self._siblings.get(split, np.full(len(dataset), -1)), self.seed)
            return BatchSampler(order, self.batch_size, drop_last=True)
        return super()._train_batches(split, dataset, generator)
