"""WebDataset tar shards of image-caption samples, streamed for training.

A shard is an uncompressed tar archive whose members form samples by key (the member name up
to the first dot of its base name, webdataset's convention): ``<key>.jpg`` (or ``.jpeg``,
``.png``, ``.webp``, ``.bmp``) with ``<key>.txt`` (one caption) and/or ``<key>.json``
(``{"captions": [...]}`` or ``{"caption": "..."}``, plus label fields; its captions win over the
``.txt``). A split's shards are a brace pattern relative to the data root,
``train-{000000..000009}.tar`` (``::`` joins several patterns).

:func:`scan_shards` reads every shard's tar headers and text members once, not its images, and
keeps each image's byte range, so the captions (for the tokenizer), labels and sample counts
are known before training and an image is one ``seek`` + ``read``. A missing caption or image
member, bad text or JSON, or a corrupt tar header is an error naming the shard and member; an
image that fails to decode later is skipped like any bad file (``PairDataset``).
:class:`ShardStream` streams the training split shard by shard across DDP ranks and loader
workers; evaluation indexes the images by offset and shards the samples like every other
format (``EvalShard``), so it sees every sample once.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info
from webdataset.shardlists import expand_urls
from webdataset.tariterators import base_plus_ext

from datamodules.errors import DataError, DataFileMissing
from datamodules.formats.jsonl import LabelReader, captions_of
from datamodules.media import MediaError
from datamodules.storage import Captions, pack_strings

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")


def expand_shards(pattern: str, root: str | Path, setting: str) -> list[Path]:
    """The shard files of a brace ``pattern`` under ``root``; :class:`DataFileMissing` naming
    ``setting`` (the config field) when none or only some of them exist."""
    paths = [Path(root) / name for name in expand_urls(pattern)]
    missing = [path for path in paths if not path.is_file()]
    if len(missing) == len(paths):
        raise DataFileMissing(
            f"{setting} {pattern!r} matches no file under {root} "
            f"({len(paths)} name(s) tried, the first {paths[0].name!r})"
        )
    if missing:
        raise DataFileMissing(
            f"{setting} {pattern!r}: {len(missing)} of {len(paths)} shards are missing under "
            f"{root}: {', '.join(path.name for path in missing[:3])}"
            + (", ..." if len(missing) > 3 else "")
        )
    return paths


@dataclass(frozen=True)
class ShardIndex:
    """The samples of a split's shards in shard then key order: item ``i`` is the image stored
    at bytes ``offsets[i]:offsets[i] + sizes[i]`` of its shard (member ``members[i]``); the
    items of shard ``s`` (``shards[s]``) are ``shard_items[s]:shard_items[s + 1]``."""

    shards: np.ndarray  # bytes [S]: paths, UTF-8
    shard_items: np.ndarray  # int64 [S + 1]
    offsets: np.ndarray  # int64 [N]
    sizes: np.ndarray  # int64 [N]
    members: np.ndarray  # bytes [N]: member names
    captions: Captions

    def shard_path(self, i: int) -> str:
        """The shard file of item ``i``."""
        return self.shards[np.searchsorted(self.shard_items, i, side="right") - 1].decode()

    def member(self, i: int) -> str:
        """``shard:member`` of item ``i``'s image, for messages."""
        return f"{self.shard_path(i)}:{self.members[i].decode()}"

    def read(self, i: int) -> bytes:
        """The stored bytes of item ``i``'s image; ``MediaError`` when the shard ends early."""
        size = int(self.sizes[i])
        with open(self.shard_path(i), "rb") as shard:
            shard.seek(int(self.offsets[i]))
            data = shard.read(size)
        if len(data) != size:
            raise MediaError(f"image {self.member(i)} (item {i}) is truncated")
        return data


def _text(tar: tarfile.TarFile, member: tarfile.TarInfo, where: str) -> str:
    """A member's bytes as UTF-8 text."""
    try:
        return tar.extractfile(member).read().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{where}: not UTF-8 text") from None


def _sample(
    tar: tarfile.TarFile, path: Path, key: str, members: dict[str, tarfile.TarInfo]
) -> tuple[tarfile.TarInfo, list[str], dict[str, Any], str]:
    """A sample's image member, captions, JSON record ({} without one) and where the record is."""
    image = next((members[e] for e in IMAGE_EXTENSIONS if e in members), None)
    if image is None:
        raise DataError(
            f"{path}: sample {key!r} has no image member ({', '.join(IMAGE_EXTENSIONS)}); it has "
            f"{', '.join(sorted(members))}"
        )
    record: dict[str, Any] = {}
    where = f"{path}:{key}"
    if "json" in members:
        where = f"{path}:{members['json'].name}"
        try:
            record = json.loads(_text(tar, members["json"], where))
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: invalid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object")
    captions = captions_of(record)
    if captions is None and ("captions" in record or "caption" in record):
        raise DataError(f"{where}: 'captions' must be a non-empty list of strings")
    if captions is None and "txt" in members:
        text_where = f"{path}:{members['txt'].name}"
        text = _text(tar, members["txt"], text_where).strip()
        if not text:
            raise DataError(f"{text_where}: empty caption")
        captions = [text]
    if captions is None:
        raise DataError(f"{path}: sample {key!r} has no caption (.txt, or .json 'captions')")
    return image, captions, record, where


def scan_shards(paths: Sequence[Path], labels: LabelReader | None = None) -> ShardIndex:
    """Index the samples of ``paths`` (see the module docstring); ``labels`` collects the label
    fields of the samples' JSON records, keyed by item number."""
    shard_items, offsets, sizes, members, captions = [0], [], [], [], []
    for path in paths:
        try:
            with tarfile.open(path, "r:") as tar:
                samples: dict[str, dict[str, tarfile.TarInfo]] = {}
                for member in tar:
                    key, extension = base_plus_ext(member.name)
                    if not member.isreg() or key is None or Path(key).name.startswith("__"):
                        continue
                    group = samples.setdefault(key, {})
                    if extension.lower() in group:
                        raise DataError(f"{path}:{member.name}: a second .{extension} of {key!r}")
                    group[extension.lower()] = member
                with open(path, "rb") as raw:  # tarfile stops quietly at a corrupt header
                    raw.seek(tar.offset)
                    if any(raw.read(tarfile.BLOCKSIZE)):
                        raise DataError(
                            f"{path}: corrupt tar header at byte {tar.offset}; the members from "
                            "there on cannot be read"
                        )
                for key, group in samples.items():
                    image, texts, record, where = _sample(tar, path, key, group)
                    if labels is not None:
                        labels.add(len(offsets), record, where)
                    offsets.append(image.offset_data)
                    sizes.append(image.size)
                    members.append(image.name)
                    captions.append(texts)
        except tarfile.TarError as err:
            raise DataError(f"{path}: not a readable uncompressed tar archive ({err})") from None
        shard_items.append(len(offsets))
        if shard_items[-1] == shard_items[-2]:
            raise DataError(f"{path}: no samples")
    return ShardIndex(
        shards=pack_strings([str(path) for path in paths]),
        shard_items=np.array(shard_items, dtype=np.int64),
        offsets=np.array(offsets, dtype=np.int64),
        sizes=np.array(sizes, dtype=np.int64),
        members=pack_strings(members),
        captions=Captions.from_lists(captions),
    )


def shuffle_buffer(samples: Iterator[int], size: int, rng: np.random.Generator) -> Iterator[int]:
    """webdataset's ``shuffle(size)``: a buffer of ``size`` samples, each step yielding a random
    one and putting the next sample in its place; at most ``size`` samples apart are swapped,
    so reads stay near the stream's position. ``size <= 1``: the stream as it is."""
    if size <= 1:
        yield from samples
        return
    buffer: list[int] = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        k = int(rng.integers(size))
        yield buffer[k]
        buffer[k] = sample
    rng.shuffle(buffer)
    yield from buffer


def round_robin_skips(quotas: Sequence[int], consumed: int) -> list[int]:
    """How many batches each loader worker produced among the first ``consumed`` of a rank: a
    DataLoader takes them in turn from the workers that still have batches (``quotas``)."""
    left, skips, worker = list(quotas), [0] * len(quotas), 0
    for _ in range(min(consumed, sum(quotas))):
        while left[worker] == 0:
            worker = (worker + 1) % len(quotas)
        skips[worker] += 1
        left[worker] -= 1
        worker = (worker + 1) % len(quotas)
    return skips


class ShardStream(IterableDataset):
    """The training samples of a map-style ``dataset`` streamed shard by shard, split across DDP
    ranks and loader workers without duplicates.

    ``shard_samples[s]:shard_samples[s + 1]`` are the samples (dataset indices) of shard ``s``.
    Each epoch shuffles the shard order (seed ``seed + epoch``); rank ``r`` of ``world`` takes
    shards ``r::world`` of it and its loader worker ``w`` of ``workers`` takes ``w::workers`` of
    those, reads their samples in order through a :func:`shuffle_buffer` of ``buffer`` samples
    and yields lists of ``batch_size / world`` samples (the loader's ``collate_fn`` stacks
    them), so one step of all ranks is one global batch of ``batch_size``.

    End of an epoch: a worker drops its last partial batch, and every rank yields the same
    number of batches, the least any rank has (DDP collectives need as many steps on every
    rank); a rank with more drops the extra batches from its workers with the most. ``len()``
    is that count for the current ``epoch``; it changes a little with the shard order.
    ``skip``: batches of the epoch already trained (a resumed run) to pass over unread.
    """

    def __init__(
        self,
        dataset: Dataset,
        shard_samples: np.ndarray,
        batch_size: int,
        rank: int = 0,
        world: int = 1,
        workers: int = 0,
        seed: int = 0,
        buffer: int = 0,
    ) -> None:
        if batch_size % world:
            raise ValueError(
                f"data.batch_size {batch_size} is the global contrastive batch and must divide "
                f"evenly over {world} processes"
            )
        num_shards = len(shard_samples) - 1
        if num_shards < world:
            raise ValueError(
                f"{num_shards} training shards for {world} processes: each needs at least one"
            )
        self.dataset, self.shard_samples = dataset, np.asarray(shard_samples, dtype=np.int64)
        self.batch_size, self.rank, self.world = batch_size // world, rank, world
        self.workers, self.seed, self.buffer = max(workers, 1), seed, buffer
        self.epoch, self.skip = 0, 0

    def plan(self, epoch: int) -> tuple[list[list[int]], list[int]]:
        """This rank's shards and number of batches per loader worker in ``epoch``."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(len(self.shard_samples) - 1, generator=generator).tolist()
        counts = np.diff(self.shard_samples)
        shards = [
            [order[r :: self.world][w :: self.workers] for w in range(self.workers)]
            for r in range(self.world)
        ]
        full = [[int(counts[s].sum()) // self.batch_size for s in rank] for rank in shards]
        steps = min(sum(batches) for batches in full)
        if steps == 0:
            raise ValueError(
                f"epoch {epoch}: a process's shards hold fewer than one batch of "
                f"{self.batch_size} samples per loader worker; use fewer workers, a smaller "
                "batch or more samples per shard"
            )
        quotas = full[self.rank]
        while sum(quotas) > steps:
            quotas[int(np.argmax(quotas))] -= 1
        return shards[self.rank], quotas

    def __len__(self) -> int:
        return sum(self.plan(self.epoch)[1])

    def __iter__(self) -> Iterator[list[dict]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if workers != self.workers:
            raise RuntimeError(f"planned for {self.workers} loader workers, run by {workers}")
        shards, quotas = self.plan(self.epoch)
        skip = round_robin_skips(quotas, self.skip)[worker]
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        stream = (
            k
            for s in shards[worker]
            for k in range(int(self.shard_samples[s]), int(self.shard_samples[s + 1]))
        )
        samples = shuffle_buffer(stream, self.buffer, rng)
        for step in range(quotas[worker]):
            batch = [next(samples) for _ in range(self.batch_size)]
            if step >= skip:
                yield [self.dataset[k] for k in batch]


class StreamLoader(DataLoader):
    """The training loader of a :class:`ShardStream`. Before each pass it sets the stream's
    epoch (``epoch()``, e.g. the trainer's; None: its own count of passes) and, after a
    restart, the batches of that epoch training had consumed (Lightning saves and restores its
    ``state_dict``), so a resumed epoch yields the batches it had left (the same batches; their
    order across workers may differ). Workers are started afresh each pass so they see the
    epoch."""

    def __init__(
        self,
        stream: ShardStream,
        *,
        epoch: Callable[[], int | None],
        consumed: Callable[[], int],
        **kwargs: Any,
    ) -> None:
        super().__init__(stream, batch_size=None, persistent_workers=False, **kwargs)
        self._epoch, self._consumed, self._passes = epoch, consumed, 0
        self._resume: dict[str, int] | None = None
        stream.epoch = self._current_epoch()

    def _current_epoch(self) -> int:
        epoch = self._epoch()
        return self._passes if epoch is None else epoch

    def __iter__(self):
        stream: ShardStream = self.dataset
        stream.epoch, stream.skip = self._current_epoch(), 0
        if self._resume is not None and self._resume["epoch"] == stream.epoch:
            stream.skip = int(self._resume["consumed"])
        self._resume = None
        self._passes += 1
        return super().__iter__()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.dataset.epoch, "consumed": self._consumed()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = state
