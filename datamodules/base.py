"""The datamodule base every family shares: splits, the tokenizer handed in by the text
encoder, the declared interface, and the loaders.

A family (datamodules/pairs.py for items with captions, datamodules/items.py for items with any
modalities, views, labels and targets) provides its datasets and collate from the splits of its
source (looked up once in the registry of datamodules/sources by ``data.format``); this class
builds the loaders the same way for all of them:

- batch sizes are global: under DDP with W processes each rank loads ``batch_size / W`` rows
  of the same global batch (:class:`~datamodules.samplers.RankSlices`) and
  ``ceil(eval_batch_size / W)`` evaluation samples (:class:`~datamodules.samplers.EvalShard`),
  so a config means the same experiment on any number of devices; the trainer must not replace
  the samplers (``use_distributed_sampler=False``);
- training shuffles with a generator seeded by ``seed`` and drops the last partial batch (a
  contrastive loss on a small remainder batch has few negatives and a different scale), and a
  resumed epoch continues where it stopped (:class:`~datamodules.samplers.ResumableLoader`);
- evaluation keeps the order and every sample.
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, Subset

from datamodules.errors import DataError
from datamodules.samplers import EvalShard, RankSlices, ResumableLoader
from datamodules.sources import SOURCES
from datamodules.storage import SPLITS, STAGE_SPLITS


class SplitsDataModule(L.LightningDataModule):
    """Splits, tokenizer, loaders and the declared interface shared by every family.

    A family sets ``modalities`` and implements ``_dataset(split)`` (from the splits of
    ``self.source``, its registered source), ``_collate_with(tokenizer, train)``,
    ``tower_context()``, ``num_items(split)`` and ``training_texts()``, and overrides the
    declared properties that apply to it. ``_train_batches(split, dataset, generator)`` chooses
    the training batches (default: random global batches).
    """

    #: Encoder names, one per modality batch key (text: ``text_ids`` / ``text_mask``).
    modalities: tuple[str, ...] = ()

    def __init__(self, cfg: Any, tokenizer: Any = None) -> None:
        """``cfg``: the data block (a :class:`~datamodules.config.SourceDataConfig`);
        ``tokenizer``: the text encoder's (experiments build it from ``model.text``: see
        ``modules.towers.build_tokenizer``); None until set when the data has text."""
        super().__init__()
        if cfg.batch_size < 1 or cfg.eval_batch_size < 1 or cfg.num_workers < 0:
            raise ValueError("batch sizes must be positive and num_workers non-negative")
        self.cfg = cfg
        self.batch_size, self.eval_batch_size = cfg.batch_size, cfg.eval_batch_size
        self.num_workers, self.seed = cfg.num_workers, cfg.seed
        self.tokenizer = tokenizer
        self.source = SOURCES.build(cfg)
        self.datasets: dict[str, Dataset] = {}

    # -- declared interface --------------------------------------------------------------------
    @property
    def needs_tokenizer(self) -> bool:
        """Whether batches carry tokenized text."""
        return "text" in self.modalities

    @property
    def views(self) -> dict[str, int]:
        """Modality -> number of views V in training batches (``<modality>@0`` ...)."""
        return {}

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """Modality pairs to evaluate retrieval on (none by default)."""
        return ()

    @property
    def class_names(self) -> dict[str, list[str]]:
        """Task -> the name of each class, in label-id order (``label/<task>``)."""
        return {}

    @property
    def labels(self) -> dict[str, int]:
        """Task -> number of classes of the batches' ``label/<task>``."""
        return {task: len(names) for task, names in self.class_names.items()}

    @property
    def targets(self) -> tuple[str, ...]:
        """Names of the continuous targets ``target/<name>``."""
        return ()

    @property
    def zero_shot_tasks(self) -> dict[str, list[str]] | dict[str, list[list[str]]]:
        """Task -> per class (in label-id order) one prompt or a list of template prompts;
        scored on the item-side embedding against ``label/<task>`` (none by default)."""
        return {}

    @property
    def zero_shot_binary_tasks(self) -> dict[str, tuple[str, str]]:
        """Task -> (negative prompt, positive prompt) for a yes/no finding; scored as AUROC of
        the item-side embedding's similarity difference against ``label/<task>`` in {0, 1}."""
        return {}

    @property
    def choice_tasks(self) -> dict[str, tuple[str, str]]:
        """Task -> (batch key, modality): a wrong candidate of that modality for each sample
        (e.g. a time-shifted clip). Scored as the fraction of samples whose true pair is more
        similar than the wrong candidate, anchored on the pair's other modality."""
        return {}

    @property
    def class_retrieval_labels(self) -> tuple[str, ...]:
        """Labels (``label/<name>``) whose combination is an item's class for item-to-item
        retrieval by class (``{stage}/class_retrieval/*``); none by default."""
        return ()

    def tower_context(self) -> dict[str, Any]:
        """What towers must know about the inputs (see ``modules.towers.TowerContext``)."""
        raise NotImplementedError

    def num_items(self, split: str) -> int:
        """Items (images, clips, studies, scenes) of a split."""
        raise NotImplementedError

    def training_texts(self) -> list[str]:
        """Every training text: what a word-level tokenizer learns its vocabulary from (the
        tokenizer belongs to the text encoder: ``modules.towers.build_tokenizer``)."""
        raise NotImplementedError

    def group_batches(self, item_groups: Any) -> None:
        """Draw training batches within groups of training items (``item_groups[i]``: the
        group of item ``i``; None: random batches). Families that can, override this."""
        if item_groups is not None:
            raise ValueError(f"{type(self).__name__} cannot draw training batches within groups")

    # -- splits --------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Make the source's data once, e.g. generate the built-in data into the cache
        (Lightning calls this on one process per node)."""
        self.source.prepare()

    def setup(self, stage: str | None = None) -> None:
        """Load the splits of ``stage`` (all for None), validating real manifests here in the
        main process."""
        for split in STAGE_SPLITS.get(stage or "", SPLITS):
            if split not in self.datasets:
                self.datasets[split] = self._dataset(split)

    def _dataset(self, split: str) -> Dataset:
        """The dataset of one split (families)."""
        raise NotImplementedError

    # -- loaders -------------------------------------------------------------------------------
    def _collate_with(self, tokenizer: Any, train: bool) -> Callable[[list[dict]], dict[str, Any]]:
        """The family's collate of training (``train``) or evaluation batches (families)."""
        raise NotImplementedError

    def _collate(self, train: bool = False) -> Callable[[list[dict]], dict[str, Any]]:
        if self.needs_tokenizer and self.tokenizer is None:
            raise RuntimeError(
                f"{type(self).__name__} has no tokenizer: the text encoder owns it; set "
                "datamodule.tokenizer = modules.towers.build_tokenizer(model.text, "
                "datamodule.training_texts(), max_len)"
            )
        return self._collate_with(self.tokenizer, train)

    def ordered_loader(self, split: str, indices: Sequence[int] | None = None) -> DataLoader:
        """Every sample of ``split`` (or those of ``indices``) in order on this process, not
        sharded (e.g. to embed the whole training set on each rank)."""
        if split not in self.datasets:
            raise RuntimeError(f"split {split!r} is not set up; call setup() first")
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

    def _eval_loader(self, dataset: Dataset, **common: Any) -> DataLoader:
        """Rank r's share of ``dataset`` in order (padded to equal counts; evaluators drop the
        repeats by sample id)."""
        rank, world = self._rank_and_world()
        return DataLoader(
            dataset,
            batch_size=-(-self.eval_batch_size // world),
            sampler=EvalShard(len(dataset), rank, world),
            **common,
        )

    def _loader(self, split: str, train: bool) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"split {split!r} is not set up; call setup() first")
        dataset = self.datasets[split]
        common = dict(
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            collate_fn=self._collate(train),
        )
        if not train:
            return self._eval_loader(dataset, **common)
        if len(dataset) < self.batch_size:
            raise DataError(
                f"train split has {len(dataset)} samples, fewer than data.batch_size "
                f"{self.batch_size}: every batch would be dropped; lower data.batch_size"
            )
        # One generator drives the worker seeds and the order, as DataLoader(shuffle=True) does.
        generator = torch.Generator().manual_seed(self.seed)
        rank, world = self._rank_and_world()
        return ResumableLoader(
            dataset,
            batch_sampler=RankSlices(self._train_batches(split, dataset, generator), rank, world),
            generator=generator,
            consumed=self._batches_trained,
            **common,
        )

    def _train_batches(
        self, split: str, dataset: Dataset, generator: torch.Generator
    ) -> BatchSampler | Sampler[list[Any]]:
        """The global training batches: random (from ``generator``), the last partial one
        dropped. Families plug in other orders (siblings, groups, seeds per sample)."""
        return BatchSampler(
            torch.utils.data.RandomSampler(dataset, generator=generator),
            self.batch_size,
            drop_last=True,
        )

    def _batches_trained(self) -> int:
        """Training batches the attached trainer has processed in the current epoch."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0
        return trainer.fit_loop.epoch_loop.batch_progress.current.processed
