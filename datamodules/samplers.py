"""Samplers, in one place: the training order and global batches, their slices per rank, the
resumable training loader, and the evaluation shards.

Training batches are global (``data.batch_size`` whatever the number of processes): every
rank draws the same global batches from one seeded generator and loads its slice
(:class:`RankSlices`). Method-requested batching plugs in here: batches within groups
(:class:`GroupBatches`, MCL's clusters), hard-negative siblings side by side
(:class:`SiblingShuffle`), a seed per sample (:class:`SeededBatches`, random views).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler


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
    full batches (a group's remainder is dropped) and takes the groups in turn, in group
    order: a batch of the first group, then of the second, ..., then the first again, skipping
    groups that have run out, as MCL's official ``MCL_batch_sampler_DDP`` does.
    Deterministic from ``seed``. Used for MCL's feature-aware negatives: the in-batch
    negatives of a sample all share its cluster."""

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
        per_group = []
        for members in self.members:
            order = members[torch.randperm(len(members), generator=self.generator).numpy()]
            full = len(order) // self.batch_size * self.batch_size
            per_group.append(np.split(order[:full], full // self.batch_size) if full else [])
        for turn in range(max(len(batches) for batches in per_group)):
            for batches in per_group:
                if turn < len(batches):
                    yield batches[turn].tolist()


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


class SeededBatches(Sampler[list[tuple[int, int]]]):
    """The global batches of ``batches`` with a seed per sample drawn from ``generator``: the
    sample's random choices then depend on the global batch only, not on which rank loads it
    or on how many ranks there are. Exposes ``batch_size`` and the order ``sampler`` as a
    ``BatchSampler`` does (for :class:`RankSlices` and :class:`ResumableLoader`)."""

    def __init__(self, batches: BatchSampler, generator: torch.Generator) -> None:
        self.batches, self.generator = batches, generator
        self.batch_size = batches.batch_size

    @property
    def sampler(self) -> Sampler[int]:
        return self.batches.sampler

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            seeds = torch.randint(2**62, (len(batch),), generator=self.generator).tolist()
            yield list(zip(batch, seeds, strict=True))
