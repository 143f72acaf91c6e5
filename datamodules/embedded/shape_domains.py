"""Built-in two-domain image classification: one shape per image, on two backgrounds.

Each image holds one object of the shapes scenes (:mod:`datamodules.embedded.shapes`: 6
shapes, 6 colours, drawn by its ``draw_object``), larger than theirs (half extent 20-30% of the
image) and anywhere in the image; the class
is the shape (``shape``), the colour is a second label (``color``). The two domains differ in
the background only (the Office-31 / VisDA-C gap, scoped down to appearance):

- ``source``: the shapes scenes' background, a dark noisy grey (level 25..85, +-8 noise);
- ``target``: a bright, saturated colour with stripes of random orientation and period and
  strong per-pixel noise (the video-domains target background,
  :func:`datamodules.embedded.video_domains.background`), so a classifier trained on the source
  alone loses accuracy on it (measured in the README) but stays well above chance.

Splits: ``train``, ``val`` and ``test`` of each domain, ``num_*`` images each, labels stored
for all (the target's training labels are the active-learning oracle: a method only reads the
ones it queried). Deterministic from :class:`ShapeDomainsConfig`; written once into
``<cache_root>/data/shape_domains-<hash>``.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from datamodules.embedded.cache import config_key, write_once
from datamodules.embedded.shapes import COLORS, SHAPES, SPLITS, Obj, draw_object
from datamodules.embedded.video_domains import background

GENERATOR_VERSION = 1
DOMAINS = ("source", "target")


@dataclass(frozen=True)
class ShapeDomainsConfig:
    """Generator parameters; their hash names the cache directory."""

    num_train: int = 2000
    num_val: int = 500
    num_test: int = 1000
    image_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.num_train, self.num_val, self.num_test) < 1:
            raise ValueError("num_train, num_val and num_test must be at least 1")
        if self.image_size < 24:
            raise ValueError(f"image_size must be at least 24, got {self.image_size}")

    def num(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]

    def key(self) -> str:
        return config_key(self, GENERATOR_VERSION)


def random_object(py: random.Random, image_size: int) -> tuple[Obj, int]:
    """One object with a random shape and colour, a half extent of 20-30% of the image (large
    enough for a small CNN to tell the shapes apart) and a centre anywhere it fits."""
    h = py.randint(round(0.2 * image_size), round(0.3 * image_size))
    x, y = (py.randint(h + 1, image_size - h - 2) for _ in range(2))
    row, col = min(2, 3 * y // image_size), min(2, 3 * x // image_size)
    return Obj(py.choice(SHAPES), py.choice(list(COLORS)), "large", row, col, x, y), h


def image(o: Obj, h: int, domain: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """``uint8 [S, S, 3]``: ``o`` of half extent ``h`` drawn on a background of ``domain``."""
    canvas = Image.fromarray(background(domain, rng, size))
    draw_object(ImageDraw.Draw(canvas), o, h, COLORS[o.color])
    return np.asarray(canvas)


def generate(cfg: ShapeDomainsConfig, split: str, domain: str) -> tuple[np.ndarray, dict]:
    """Images ``uint8 [N, S, S, 3]`` and labels (``shape``, ``color``: ``int64 [N]``)."""
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split), DOMAINS.index(domain), 7])
    py = random.Random(int(rng.integers(2**62)))
    drawn = [random_object(py, cfg.image_size) for _ in range(cfg.num(split))]
    images = np.stack([image(o, h, domain, rng, cfg.image_size) for o, h in drawn])
    objects = [o for o, _ in drawn]
    labels = {
        "shape": np.array([SHAPES.index(o.shape) for o in objects], np.int64),
        "color": np.array([list(COLORS).index(o.color) for o in objects], np.int64),
    }
    return images, labels


def shape_domains_dir(cfg: ShapeDomainsConfig, cache_root: Path) -> Path:
    return Path(cache_root) / "data" / f"shape_domains-{cfg.key()}"


def ensure_shape_domains(cfg: ShapeDomainsConfig, cache_root: Path) -> Path:
    """The cache directory of ``cfg``, generated first if absent (atomically)."""
    return write_once(shape_domains_dir(cfg, cache_root), partial(_write, cfg))


def _write(cfg: ShapeDomainsConfig, directory: Path) -> None:
    """``<domain>_<split>_images.npy``, ``<domain>_<split>.json`` (labels), ``meta.json``."""
    for domain in DOMAINS:
        for split in SPLITS:
            images, labels = generate(cfg, split, domain)
            np.save(directory / f"{domain}_{split}_images.npy", images)
            record = {task: ids.tolist() for task, ids in labels.items()}
            (directory / f"{domain}_{split}.json").write_text(json.dumps(record))
    meta = {"config": asdict(cfg), "version": GENERATOR_VERSION, "shapes": list(SHAPES)}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))


def load_labels(directory: Path, domain: str, split: str) -> dict[str, np.ndarray]:
    """Task -> ids ``int64 [N]`` of one domain's split."""
    record = json.loads((Path(directory) / f"{domain}_{split}.json").read_text())
    return {task: np.asarray(ids, dtype=np.int64) for task, ids in record.items()}
