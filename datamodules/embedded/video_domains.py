"""Built-in two-domain action videos: one moving-shapes event per clip, on two backgrounds.

Each clip holds one coloured shape (5 shapes, 6 colours) doing one of six actions over the
whole clip: ``left``, ``right``, ``up``, ``down`` (a straight move), ``appear`` or
``disappear`` (halfway through). Every action needs time: a single frame shows a shape at some
place (or none), and the reversed clip of one class is a clip of another (left <-> right,
up <-> down, appear <-> disappear). The objects, their paths and their drawing are those of
:mod:`datamodules.embedded.moving_shapes` (its ``random_objects``, ``event_tracks``,
``render``), so the sprites and motions are the same as in the video-text data.

The two domains differ only in the static background (the domain gap of UCF <-> HMDB or
Jester's two halves, scoped down to appearance):

- ``source``: the moving-shapes background, a dark noisy grey (level 25..85, +-8 noise);
- ``target``: a bright, saturated colour with stripes of random orientation and period and
  strong per-pixel noise (+-40), so a classifier trained on the source alone drops on it.

Splits: ``train`` has ``num_train`` labelled source clips and ``num_train`` target clips (their
labels are stored but the datamodule never hands them to training); ``val`` and ``test`` hold
target clips with labels. Deterministic from :class:`VideoDomainsConfig`; written once into
``<cache_root>/data/video_domains-<hash>``.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from datamodules.embedded.cache import config_key, write_once
from datamodules.embedded.moving_shapes import (
    DIRECTIONS,
    Event,
    event_tracks,
    random_objects,
    render,
)

GENERATOR_VERSION = 1
SPLITS = ("train", "val", "test")
DOMAINS = ("source", "target")
ACTIONS = (*DIRECTIONS, "appear", "disappear")


@dataclass(frozen=True)
class VideoDomainsConfig:
    """Generator parameters; their hash names the cache directory."""

    num_train: int = 4000
    num_val: int = 500
    num_test: int = 500
    num_frames: int = 8
    frame_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.num_train, self.num_val, self.num_test) < 1:
            raise ValueError("num_train, num_val and num_test must be at least 1")
        if self.num_frames < 4 or self.num_frames % 2:
            raise ValueError(f"num_frames must be even and at least 4, got {self.num_frames}")
        if self.frame_size < 24:
            raise ValueError(f"frame_size must be at least 24, got {self.frame_size}")

    def num(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]

    def key(self) -> str:
        return config_key(self, GENERATOR_VERSION)


def background(domain: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A static ``uint8 [S, S, 3]`` background of ``domain`` (see the module docstring)."""
    if domain == "source":
        level = int(rng.integers(25, 86))
        grey = rng.integers(level - 8, level + 9, (size, size), dtype=np.int64)
        return np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)
    colour = rng.integers(110, 231, 3).astype(np.float64)
    colour[rng.integers(3)] *= 0.35  # one weak channel: a saturated hue
    angle, period = rng.uniform(0, np.pi), rng.uniform(3.0, 8.0)
    y, x = np.mgrid[:size, :size]
    stripes = np.sin((x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period)
    texture = colour[None, None, :] * (1 + 0.25 * stripes[..., None])
    noise = rng.integers(-40, 41, (size, size, 3))
    return np.clip(texture + noise, 0, 255).astype(np.uint8)


def event_of(action: str) -> Event:
    """The one event (of object 0) of an action class."""
    if action in DIRECTIONS:
        return Event(0, "move", action)
    return Event(0, action)


def clip(
    action: str, domain: str, py: random.Random, rng: np.random.Generator, cfg: VideoDomainsConfig
) -> np.ndarray:
    """One clip ``uint8 [T, S, S, 3]``: a random object doing ``action`` on a ``domain``
    background. The moving-shapes renderer draws on grey; drawing on black and on white gives
    the object mask, and the object is then pasted on the coloured background."""
    objects, events = random_objects(py, 1), [event_of(action)]
    tracks = event_tracks(py, events, cfg.num_frames, cfg.frame_size)
    size = (cfg.frame_size, cfg.frame_size)
    on_black = render(objects, tracks, np.zeros(size, np.uint8))
    on_white = render(objects, tracks, np.full(size, 255, np.uint8))
    drawn = (on_black == on_white).all(axis=-1, keepdims=True)
    return np.where(drawn, on_black, background(domain, rng, cfg.frame_size)[None])


def generate(cfg: VideoDomainsConfig, split: str, domain: str) -> tuple[np.ndarray, np.ndarray]:
    """Clips ``uint8 [N, T, S, S, 3]`` and action ids ``int64 [N]`` of one split and domain."""
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split), DOMAINS.index(domain)])
    py = random.Random(int(rng.integers(2**62)))
    n = cfg.num(split)
    labels = np.array([py.randrange(len(ACTIONS)) for _ in range(n)], np.int64)
    frames = np.stack([clip(ACTIONS[a], domain, py, rng, cfg) for a in labels])
    return frames, labels


def split_domains(split: str) -> tuple[str, ...]:
    """The domains stored for a split: both for training, the target for evaluation."""
    return DOMAINS if split == "train" else ("target",)


def video_domains_dir(cfg: VideoDomainsConfig, cache_root: Path) -> Path:
    return Path(cache_root) / "data" / f"video_domains-{cfg.key()}"


def ensure_video_domains(cfg: VideoDomainsConfig, cache_root: Path) -> Path:
    """The cache directory of ``cfg``, generated first if absent (atomically)."""
    return write_once(video_domains_dir(cfg, cache_root), partial(_write, cfg))


def _write(cfg: VideoDomainsConfig, directory: Path) -> None:
    """``<split>_<domain>.npy`` frames and ``<split>.json`` labels per domain, ``meta.json``."""
    for split in SPLITS:
        labels = {}
        for domain in split_domains(split):
            frames, labels[domain] = generate(cfg, split, domain)
            np.save(directory / f"{split}_{domain}.npy", frames)
        record = {domain: ids.tolist() for domain, ids in labels.items()}
        (directory / f"{split}.json").write_text(json.dumps(record))
    meta = {"config": asdict(cfg), "version": GENERATOR_VERSION, "actions": list(ACTIONS)}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))


def load_labels(directory: Path, split: str) -> dict[str, np.ndarray]:
    """Domain -> action ids ``int64 [N]`` of one split."""
    record = json.loads((Path(directory) / f"{split}.json").read_text())
    return {domain: np.asarray(ids, dtype=np.int64) for domain, ids in record.items()}
