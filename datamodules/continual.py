"""Class-incremental tasks over a labelled items split: which intents (classes) each task
brings, and the split a task's stage sees (its new classes plus a rehearsal memory).

A continual experiment is a chain of stages, one per task (``data.task: k``, each stage
``init_from`` the previous one). Stage ``k`` trains on the items of task ``k``'s classes plus
a class-balanced, seeded sample of ``memory_size`` items of the earlier tasks' classes (the
rehearsal memory, flagged ``label/rehearsal = 1``), and evaluates on every seen task's items.
``memory_size = 0`` is plain fine-tuning. The memory is drawn afresh at each task from the
earlier tasks' training items (all of which an earlier stage trained on): the same as a
class-balanced memory of fixed size that drops items of old classes as new ones arrive.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from datamodules.items import ItemSplit
from datamodules.storage import Captions


def task_classes(num_classes: int, num_tasks: int, seed: int) -> list[list[int]]:
    """The classes of each task: a seeded permutation of the class ids cut into ``num_tasks``
    near-equal groups (each sorted)."""
    if not 1 <= num_tasks <= num_classes:
        raise ValueError(f"num_tasks must be in [1, {num_classes}], got {num_tasks}")
    order = np.random.default_rng([seed, 23]).permutation(num_classes)
    return [sorted(int(c) for c in group) for group in np.array_split(order, num_tasks)]


def memory_items(
    labels: np.ndarray, classes: Sequence[int], size: int, rng: np.random.Generator
) -> np.ndarray:
    """``size`` item ids spread evenly over ``classes`` (the first ``size mod len(classes)``
    classes get one more; a class with fewer items gives all it has), drawn without
    replacement; sorted."""
    if not classes or size <= 0:
        return np.zeros(0, dtype=np.int64)
    share, extra = divmod(size, len(classes))
    chosen = []
    for k, c in enumerate(classes):
        members = np.flatnonzero(labels == c)
        take = min(len(members), share + (k < extra))
        chosen.append(rng.choice(members, take, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


class Rows:
    """``load`` of the kept items: item ``i`` of the subset is item ``rows[i]`` of the split."""

    def __init__(self, load: Callable[[int], dict[str, Any]], rows: np.ndarray) -> None:
        self.load, self.rows = load, rows

    def __call__(self, i: int) -> dict[str, Any]:
        return self.load(int(self.rows[i]))


def subset(split: ItemSplit, rows: np.ndarray, extra_labels: dict[str, np.ndarray]) -> ItemSplit:
    """The items ``rows`` of ``split`` (renumbered 0..n-1) with their captions, labels and
    targets, plus ``extra_labels`` (one value per kept item)."""
    captions = None
    if split.captions is not None:
        c = split.captions
        captions = Captions.from_lists(
            [[c.text(k) for k in range(c.offsets[i], c.offsets[i + 1])] for i in rows]
        )
    return ItemSplit(
        len(rows),
        Rows(split.load, rows),
        captions=captions,
        labels={**{k: np.asarray(v)[rows] for k, v in split.labels.items()}, **extra_labels},
        targets={k: np.asarray(v)[rows] for k, v in split.targets.items()},
    )


def task_split(
    split: ItemSplit,
    label: str,
    tasks: list[list[int]],
    task: int,
    memory_size: int,
    train: bool,
    seed: int,
) -> ItemSplit:
    """What stage ``task`` (1-based) sees of ``split``: in training the items of the task's
    classes plus ``memory_size`` rehearsal items of the earlier tasks' classes, with
    ``label/rehearsal`` (1: memory); in evaluation the items of every seen task's classes."""
    labels = np.asarray(split.labels[label])
    seen = [c for group in tasks[:task] for c in group]
    if not train:
        return subset(split, np.flatnonzero(np.isin(labels, seen)), {})
    new = np.flatnonzero(np.isin(labels, tasks[task - 1]))
    earlier = [c for group in tasks[: task - 1] for c in group]
    memory = memory_items(labels, earlier, memory_size, np.random.default_rng([seed, task, 31]))
    rows = np.concatenate([new, memory])
    flag = np.concatenate([np.zeros(len(new)), np.ones(len(memory))]).astype(np.int64)
    return subset(split, rows, {"rehearsal": flag})
