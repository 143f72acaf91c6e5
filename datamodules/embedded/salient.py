"""Built-in contrastive-analysis data: the shapes scenes as a background set and a target set
whose scenes carry one extra, salient pattern (SepCLR's CIFAR-MNIST, scoped down).

Every scene is a shapes scene (:mod:`datamodules.embedded.shapes`, the same cache as
``shapes_views`` with the same ``num_*``, ``image_size``, ``hard_negative_fraction`` and
``seed``). A fraction ``target_fraction`` of each split (drawn without replacement) is the
target set: a large digit-like glyph (one of ``kinds`` bitmaps of a 3 x 5 digit font, ``0`` ..
``kinds - 1``) is blended over the scene in white with opacity ``alpha``, as CIFAR-MNIST blends
an MNIST digit over a CIFAR image. The glyph covers about half the image's height, at a random
offset around the centre, so most crops of a view still show part of it; the scene's objects
stay visible through it (opacity < 1). Background scenes are the plain scenes.

Labels: the scenes' ``shape``, ``color``, ``count`` (common to both sets), ``group`` (0
background, 1 target) and ``salient`` (the glyph, ``-1`` on background scenes: unknown, which
the probes ignore). Deterministic from :class:`SalientConfig`; written once into
``<cache_root>/data/shapes_salient-<hash>``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from datamodules.embedded.cache import config_key, write_once
from datamodules.embedded.shapes import SPLITS, ShapesConfig, ensure_shapes, load_split

GENERATOR_VERSION = 1
#: Digit glyphs of a 3 x 5 bitmap font, rows top to bottom ("#": stroke).
GLYPHS: tuple[tuple[str, ...], ...] = (
    ("###", "#.#", "#.#", "#.#", "###"),  # 0
    (".#.", "##.", ".#.", ".#.", "###"),  # 1
    ("###", "..#", "###", "#..", "###"),  # 2
    ("###", "..#", ".##", "..#", "###"),  # 3
    ("#.#", "#.#", "###", "..#", "..#"),  # 4
    ("###", "#..", "###", "..#", "###"),  # 5
    ("###", "#..", "###", "#.#", "###"),  # 6
    ("###", "..#", ".#.", ".#.", ".#."),  # 7
    ("###", "#.#", "###", "#.#", "###"),  # 8
    ("###", "#.#", "###", "..#", "###"),  # 9
)
GROUPS = ("background", "target")


@dataclass(frozen=True)
class SalientConfig:
    """Generator parameters (the scenes' and the glyphs'); their hash names the cache."""

    scenes: ShapesConfig
    target_fraction: float = 0.5
    kinds: int = 4
    alpha: float = 0.6

    def __post_init__(self) -> None:
        if not 0.0 < self.target_fraction < 1.0:
            raise ValueError(f"target_fraction must be in (0, 1), got {self.target_fraction}")
        if not 2 <= self.kinds <= len(GLYPHS):
            raise ValueError(f"kinds must be in [2, {len(GLYPHS)}], got {self.kinds}")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")

    def key(self) -> str:
        return config_key(self, GENERATOR_VERSION)


def glyph_mask(kind: int, image_size: int) -> np.ndarray:
    """float32 [h, w] stroke mask of glyph ``kind``, each font cell ``image_size // 10`` px."""
    cell = max(2, image_size // 10)
    bitmap = np.array([[ch == "#" for ch in row] for row in GLYPHS[kind]], dtype=np.float32)
    return np.kron(bitmap, np.ones((cell, cell), dtype=np.float32))


def overlay(image: np.ndarray, mask: np.ndarray, top: int, left: int, alpha: float) -> np.ndarray:
    """``image`` (uint8 [S, S, 3]) with white blended at ``alpha`` where ``mask`` is set, the
    mask's corner at (``top``, ``left``)."""
    out = image.astype(np.float32)
    h, w = mask.shape
    weight = alpha * mask[..., None]
    region = out[top : top + h, left : left + w]
    out[top : top + h, left : left + w] = (1 - weight) * region + weight * 255.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def generate_split(
    cfg: SalientConfig, scenes: np.ndarray, split: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The split's images (the scenes, glyphs blended on the targets), ``group`` and
    ``salient`` (int64 [N]; -1 off the target set)."""
    n, size = len(scenes), scenes.shape[1]
    rng = np.random.default_rng([cfg.scenes.seed, SPLITS.index(split), 7])
    targets = rng.permutation(n)[: max(1, round(cfg.target_fraction * n))]
    group = np.zeros(n, dtype=np.int64)
    group[targets] = 1
    salient = np.full(n, -1, dtype=np.int64)
    salient[targets] = rng.integers(cfg.kinds, size=len(targets))
    masks = [glyph_mask(k, size) for k in range(cfg.kinds)]
    images = np.array(scenes)
    for i in np.sort(targets):
        mask = masks[salient[i]]
        h, w = mask.shape
        top = (size - h) // 2 + int(rng.integers(-size // 8, size // 8 + 1))
        left = (size - w) // 2 + int(rng.integers(-size // 8, size // 8 + 1))
        top, left = min(max(top, 0), size - h), min(max(left, 0), size - w)
        images[i] = overlay(images[i], mask, top, left, cfg.alpha)
    return images, group, salient


def salient_dir(cfg: SalientConfig, cache_root: Path) -> Path:
    return Path(cache_root) / "data" / f"shapes_salient-{cfg.key()}"


def ensure_salient(cfg: SalientConfig, cache_root: Path) -> Path:
    """The cache directory of ``cfg`` (the scenes generated first), written once."""
    scenes = ensure_shapes(cfg.scenes, cache_root)
    return write_once(salient_dir(cfg, cache_root), partial(_write, cfg, scenes))


def _write(cfg: SalientConfig, scenes: Path, directory: Path) -> None:
    for split in SPLITS:
        images, group, salient = generate_split(cfg, load_split(scenes, split).images, split)
        np.save(directory / f"{split}_images.npy", images)
        np.savez(directory / f"{split}_labels.npz", group=group, salient=salient)
    meta = {"config": asdict(cfg), "version": GENERATOR_VERSION}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))


def load_labels(directory: Path, scenes: Path, split: str) -> dict[str, np.ndarray]:
    """Every label of ``split``: the scenes' (shape, color, count), group and salient."""
    with np.load(Path(directory) / f"{split}_labels.npz") as stored:
        own = {name: stored[name] for name in ("group", "salient")}
    return {**load_split(scenes, split).labels, **own}
