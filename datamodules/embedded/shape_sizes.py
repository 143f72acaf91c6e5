"""Built-in regression data: one coloured shape per image whose continuous size is the target.

``size`` is the side of the square the shape is inscribed in, in pixels: a circle's diameter,
a square's side, a diamond's diagonals, a triangle's base and height, a cross's arm span (arms
``size / 3`` thick), a star's outer diameter (inner radius 0.45 of the outer). Shapes are drawn
anti-aliased (exact coverage along 16 scanlines per pixel row), so a fractional size shows
in the pixels: the object's area is ``AREA[shape] * size**2`` to within a small fraction of a pixel.

Sizes lie in ``[size_min, size_max)``. The training split is long-tailed as in the deep
imbalanced regression benchmarks (AgeDB-DIR): 98 % of the sizes are ``size_min + 2`` plus a
log-normal (median 10 px, sigma 0.5), 2 % uniform over the range, so with bins of width 1 and
10k items some bins hold ~900 items, and the few at the small end and the long tail at the large
end hold fewer than 20. Validation and test are balanced: the same number of items (up to one)
in every unit bin, uniform within it. Shape and colour are uniform and independent of size. The
object keeps a margin of ``MARGIN`` pixels from the border, so translations by fewer pixels
never cut it.

Deterministic from :class:`SizesConfig`; :func:`ensure_sizes` writes
``<cache_root>/data/shape-sizes-<hash>`` once (atomic rename).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from datamodules.embedded.cache import config_key, write_once
from datamodules.embedded.shapes import COLORS, SHAPES, SPLITS

GENERATOR_VERSION = 1
DISTRIBUTIONS = ("long_tail", "balanced")
MARGIN = 4  # pixels between the object and the border
SUPERSAMPLE = 16  # rows per pixel
STAR_INNER = 0.45
#: Area of each shape in units of size**2.
AREA: dict[str, float] = {
    "circle": math.pi / 4,
    "square": 1.0,
    "triangle": 0.5,
    "diamond": 0.5,
    "cross": 5 / 9,
    "star": 5 * STAR_INNER * math.sin(math.pi / 5) / 4,
}
#: Long tail: sizes ``size_min + TAIL_OFFSET + lognormal(log TAIL_MEDIAN, TAIL_SIGMA)`` with
#: probability ``1 - TAIL_UNIFORM``, else uniform over the range.
TAIL_OFFSET, TAIL_MEDIAN, TAIL_SIGMA, TAIL_UNIFORM = 2.0, 10.0, 0.5, 0.02


@dataclass(frozen=True)
class SizesConfig:
    """Generator parameters; their hash names the cache directory."""

    num_train: int = 10000
    num_val: int = 1000
    num_test: int = 1000
    image_size: int = 64
    size_min: float = 6.0
    size_max: float = 54.0
    train_distribution: str = "long_tail"  # long_tail | balanced
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.num_train, self.num_val, self.num_test) < 1:
            raise ValueError("num_train, num_val and num_test must be at least 1")
        if not 4 <= self.size_min < self.size_max <= self.image_size - 2 * MARGIN:
            raise ValueError(
                f"need 4 <= size_min < size_max <= image_size - {2 * MARGIN}, got "
                f"{self.size_min}, {self.size_max}, image_size {self.image_size}"
            )
        if self.train_distribution not in DISTRIBUTIONS:
            raise ValueError(f"train_distribution must be one of {DISTRIBUTIONS}")

    def num(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]

    def key(self) -> str:
        return config_key(self, GENERATOR_VERSION)


def long_tail_sizes(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    """``n`` sizes of the long-tailed training distribution over ``[lo, hi)``."""
    out = np.empty(n)
    uniform = rng.random(n) < TAIL_UNIFORM
    out[uniform] = rng.uniform(lo, hi, int(uniform.sum()))
    todo = np.flatnonzero(~uniform)
    while len(todo):
        draw = lo + TAIL_OFFSET + np.exp(rng.normal(math.log(TAIL_MEDIAN), TAIL_SIGMA, len(todo)))
        ok = draw < hi
        out[todo[ok]] = draw[ok]
        todo = todo[~ok]
    return out


def balanced_sizes(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    """``n`` sizes with equal counts (up to one) in each unit bin ``[lo + b, lo + b + 1)``
    (the last bin ends at ``hi``), uniform within the bin, in random order."""
    bins = math.ceil(hi - lo)
    per_bin = np.full(bins, n // bins)
    per_bin[rng.permutation(bins)[: n % bins]] += 1
    start = lo + np.repeat(np.arange(bins), per_bin)
    width = np.minimum(start + 1, hi) - start
    return rng.permutation(start + rng.random(n) * width)


def outline(shape: str, size: float) -> np.ndarray:
    """``float64 [V, 2]`` corners ``(dx, dy)`` of a polygon shape centred at the origin
    (pixels, y down); the circle is not a polygon (see :func:`coverage`)."""
    h = size / 2
    if shape == "square":
        corners = [(-h, -h), (h, -h), (h, h), (-h, h)]
    elif shape == "triangle":  # apex up, base at the bottom
        corners = [(0, -h), (h, h), (-h, h)]
    elif shape == "diamond":
        corners = [(0, -h), (h, 0), (0, h), (-h, 0)]
    elif shape == "cross":
        t = h / 3
        right = [(t, -h), (t, -t), (h, -t), (h, t), (t, t), (t, h)]
        corners = right + [(-a, b) for a, b in reversed(right)]
    elif shape == "star":  # tips at radius h, inner corners at STAR_INNER * h
        corners = [
            (r * math.sin(k * math.pi / 5), -r * math.cos(k * math.pi / 5))
            for k, r in enumerate([h if k % 2 == 0 else STAR_INNER * h for k in range(10)])
        ]
    else:
        raise ValueError(f"{shape!r} has no polygon outline")
    return np.array(corners, dtype=np.float64)


def coverage(shape: str, x: float, y: float, size: float, image_size: int) -> np.ndarray:
    """``float32 [S, S]`` fraction of each pixel that the shape centred at ``(x, y)`` covers
    (pixel ``(i, j)`` spans ``[j, j + 1) x [i, i + 1)``): the shape's extent along each of
    ``SUPERSAMPLE`` rows per pixel (scanlines: even-odd crossings of the outline, or the
    circle's chord) integrated exactly over each pixel's width, averaged over the rows."""
    h = size / 2
    top, bottom = max(0, math.floor(y - h)), min(image_size, math.ceil(y + h))
    rows = top + (np.arange((bottom - top) * SUPERSAMPLE) + 0.5) / SUPERSAMPLE - y
    if shape == "circle":
        half = np.sqrt(np.maximum(h**2 - rows**2, 0.0))
        spans = np.stack([-half, half], axis=1)
    else:
        corners = outline(shape, size)
        (xa, ya), (xb, yb) = corners.T, np.roll(corners, -1, axis=0).T
        r = rows[:, None]
        crosses = (np.minimum(ya, yb) <= r) & (r < np.maximum(ya, yb))
        with np.errstate(divide="ignore", invalid="ignore"):
            at = xa + (r - ya) * (xb - xa) / (yb - ya)
        at = np.where(crosses, at, np.inf)
        if at.shape[1] % 2:  # a row crosses an even number of edges: pad to pairs
            at = np.pad(at, ((0, 0), (0, 1)), constant_values=np.inf)
        spans = np.sort(at, axis=1)  # consecutive pairs: the inside intervals
    columns = np.arange(image_size) - x
    cover = np.zeros((len(rows), image_size))
    for a, b in zip(spans[:, 0::2].T, spans[:, 1::2].T, strict=True):
        cover += np.clip(b[:, None] - columns, 0, 1) - np.clip(a[:, None] - columns, 0, 1)
    out = np.zeros((image_size, image_size), np.float32)
    out[top:bottom] = cover.reshape(bottom - top, SUPERSAMPLE, image_size).mean(axis=1)
    return out


def generate_split(cfg: SizesConfig, split: str) -> tuple[np.ndarray, dict]:
    """Images ``uint8 [N, S, S, 3]`` and a JSON-able record: ``size``, ``shape``, ``color``
    (label ids), ``x``, ``y`` (object centre in pixels) per image."""
    n, s = cfg.num(split), cfg.image_size
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split)])
    long_tail = split == "train" and cfg.train_distribution == "long_tail"
    draw = long_tail_sizes if long_tail else balanced_sizes
    sizes = draw(rng, n, cfg.size_min, cfg.size_max)
    shapes = rng.integers(len(SHAPES), size=n)
    colors = rng.integers(len(COLORS), size=n)
    palette = np.array(list(COLORS.values()), dtype=np.float32)
    images = np.empty((n, s, s, 3), np.uint8)
    xs, ys = np.empty(n), np.empty(n)
    for i in range(n):
        lo, hi = MARGIN + sizes[i] / 2, s - MARGIN - sizes[i] / 2
        xs[i], ys[i] = rng.uniform(lo, hi), rng.uniform(lo, hi)
        level = rng.integers(25, 86)
        background = rng.integers(level - 8, level + 9, (s, s, 1)).astype(np.float32)
        alpha = coverage(SHAPES[shapes[i]], xs[i], ys[i], sizes[i], s)[..., None]
        images[i] = np.rint(background * (1 - alpha) + palette[colors[i]] * alpha)
    record = {
        "size": sizes.tolist(),
        "shape": shapes.tolist(),
        "color": colors.tolist(),
        "x": xs.tolist(),
        "y": ys.tolist(),
    }
    return images, record


def sizes_dir(cfg: SizesConfig, cache_root: Path) -> Path:
    return Path(cache_root) / "data" / f"shape-sizes-{cfg.key()}"


def ensure_sizes(cfg: SizesConfig, cache_root: Path) -> Path:
    """The cache directory of ``cfg``, generated first if absent."""
    return write_once(sizes_dir(cfg, cache_root), partial(_write_sizes, cfg))


def _write_sizes(cfg: SizesConfig, directory: Path) -> None:
    for split in SPLITS:
        images, record = generate_split(cfg, split)
        np.save(directory / f"{split}_images.npy", images)
        (directory / f"{split}.json").write_text(json.dumps(record))
    meta = {"config": asdict(cfg), "version": GENERATOR_VERSION, "area": AREA}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))


def load_record(directory: Path, split: str) -> dict[str, np.ndarray]:
    """A split's record as arrays: ``size`` float32, ``shape``/``color`` int64, ``x``/``y``."""
    record = json.loads((Path(directory) / f"{split}.json").read_text())
    return {
        "size": np.asarray(record["size"], dtype=np.float32),
        "shape": np.asarray(record["shape"], dtype=np.int64),
        "color": np.asarray(record["color"], dtype=np.int64),
        "x": np.asarray(record["x"], dtype=np.float64),
        "y": np.asarray(record["y"], dtype=np.float64),
    }
