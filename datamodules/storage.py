"""Where data lives and how it is held: the cache folder, compact string arrays, memory-mapped
rows, caption indices, the split names, and the errors that mean "this sample's file is bad".

Kept as flat arrays rather than Python objects, so dataloader workers and DDP ranks do not each
copy a huge list (a known RAM blow-up of annotation lists).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.media import MediaError
from modules.words import split_words

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

    def shared_across_items(self) -> tuple[int, str | None]:
        """How many captions are, word for word (lower-cased, as the tokenizer splits them),
        also a caption of another item, and one of them (None if none)."""
        owners: dict[tuple[str, ...], set[int]] = {}
        for text, item in zip(self.all_texts(), self.item.tolist(), strict=True):
            owners.setdefault(tuple(split_words(text)), set()).add(item)
        shared = [words for words, items in owners.items() if len(items) > 1]
        if not shared:
            return 0, None
        keys = set(shared)
        count = sum(tuple(split_words(text)) in keys for text in self.all_texts())
        return count, " ".join(shared[0])


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
