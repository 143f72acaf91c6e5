"""Built-in open-world attribution data: the shapes scenes "rendered" by several synthetic
generators, each leaving its own fingerprint (for CPL, Sun et al., ICCV 2023).

The scenes are those of :mod:`datamodules.embedded.shapes` (reused through its cache, not
copied). Every scene gets one source, balanced over the ``generators`` in a seeded random order,
and that generator's fingerprint, an artefact of ``strength`` grey levels, well below the
scenes' own background noise (uniform +-8) and invisible at a glance, but learnable by a small
CNN:

- ``checkerboard``: ``+-strength`` alternating per pixel (a periodic high-frequency pattern, the
  spectral peak of transposed-convolution upsampling);
- ``channel_noise``: Gaussian noise of std ``strength`` in the blue channel only (a
  channel-specific noise spectrum);
- ``blur``: a 3 x 3 box blur (a low-pass generator);
- ``stripes``: ``strength * cos(pi * row / 2)`` (a periodic pattern along one axis);
- ``quantise``: values rounded to multiples of ``2 * strength`` (banding, as coarse colour
  quantisation);
- ``upsample``: 2 x 2 average-pooled then nearest-upsampled (a block artefact).

The first ``num_known`` generators are the known sources; the others are novel. Each novel one
has a known relative (stripes ~ checkerboard, upsample ~ blur), so telling them apart needs the
fingerprint, not a generic "artefact" feature. In the training split a ``labelled_fraction`` of
the known sources' items is labelled (ORCA / OW-DFA protocol: 50 %); every other training item
(the rest of the known sources and all novel ones) is unlabelled. Validation and test hold every
source, none labelled. Label ids: known sources first (``0 .. num_known - 1``), as OW-DFA's
evaluation assumes.

Deterministic from :class:`GeneratorsConfig`; :func:`ensure_generators` writes
``<cache_root>/data/shape-generators-<hash>`` once (atomic rename).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from datamodules.embedded.cache import config_key, write_once
from datamodules.embedded.shapes import SPLITS, ShapesConfig, ensure_shapes, load_split

GENERATOR_VERSION = 1
GENERATORS = ("checkerboard", "channel_noise", "blur", "stripes", "quantise", "upsample")


def _checkerboard(x: np.ndarray, a: float, rng: np.random.Generator) -> np.ndarray:
    s = x.shape[1]
    sign = np.where((np.arange(s)[:, None] + np.arange(s)[None, :]) % 2 == 0, 1.0, -1.0)
    return x + a * sign[None, :, :, None]


def _channel_noise(x: np.ndarray, a: float, rng: np.random.Generator) -> np.ndarray:
    out = x.copy()
    out[..., 2] += rng.normal(0.0, a, x.shape[:3])
    return out


def _blur(x: np.ndarray, a: float, rng: np.random.Generator) -> np.ndarray:
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    s = x.shape[1]
    return sum(padded[:, i : i + s, j : j + s] for i in range(3) for j in range(3)) / 9.0


def _stripes(x: np.ndarray, a: float, rng: np.random.Generator) -> np.ndarray:
    rows = a * np.cos(np.pi * np.arange(x.shape[1]) / 2)
    return x + rows[None, :, None, None]


def _quantise(x: np.ndarray, a: float, rng: np.random.Generator) -> np.ndarray:
    step = 2.0 * a
    return np.round(x / step) * step


def _upsample(x: np.ndarray, a: float, rng: np.random.Generator) -> np.ndarray:
    n, s, _, c = x.shape
    pooled = x.reshape(n, s // 2, 2, s // 2, 2, c).mean(axis=(2, 4))
    return pooled.repeat(2, axis=1).repeat(2, axis=2)


#: name -> fingerprint(images float32 [n, S, S, 3], strength, rng) -> images.
FINGERPRINTS: dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    "checkerboard": _checkerboard,
    "channel_noise": _channel_noise,
    "blur": _blur,
    "stripes": _stripes,
    "quantise": _quantise,
    "upsample": _upsample,
}


@dataclass(frozen=True)
class GeneratorsConfig:
    """Generator parameters; their hash names the cache directory."""

    scenes: ShapesConfig = field(default_factory=ShapesConfig)
    generators: tuple[str, ...] = GENERATORS
    num_known: int = 3
    labelled_fraction: float = 0.5
    strength: float = 4.0
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.generators) - set(FINGERPRINTS))
        if unknown or len(set(self.generators)) != len(self.generators):
            raise ValueError(
                f"generators: distinct names among {list(FINGERPRINTS)}, "
                f"got {list(self.generators)}"
            )
        if not 1 <= self.num_known < len(self.generators):
            raise ValueError(
                f"num_known: between 1 and {len(self.generators) - 1} (at least one novel "
                f"source), got {self.num_known}"
            )
        if not 0.0 < self.labelled_fraction <= 1.0:
            raise ValueError(f"labelled_fraction: in (0, 1], got {self.labelled_fraction}")
        if self.strength <= 0:
            raise ValueError(f"strength: must be positive, got {self.strength}")
        if self.scenes.image_size % 2:
            raise ValueError(f"image_size: must be even (upsample), got {self.scenes.image_size}")

    def key(self) -> str:
        return config_key(self, GENERATOR_VERSION)


def assign_sources(
    cfg: GeneratorsConfig, split: str, n: int
) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """Per item: its source id (balanced, seeded order) and whether it is labelled; and the
    generator that draws the fingerprints' noise."""
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split), 7])
    sources = rng.permutation(np.arange(n) % len(cfg.generators))
    labelled = np.zeros(n, dtype=bool)
    if split == "train":
        known = np.flatnonzero(sources < cfg.num_known)
        chosen = rng.choice(known, round(cfg.labelled_fraction * len(known)), replace=False)
        labelled[chosen] = True
    return sources, labelled, rng


def fingerprinted(
    cfg: GeneratorsConfig, scenes: np.ndarray, split: str
) -> tuple[np.ndarray, dict[str, list[int]]]:
    """The scenes (uint8 [N, S, S, 3]) through their generators, and the split's record:
    ``source`` (label id) and ``labelled`` (0/1) per item."""
    sources, labelled, rng = assign_sources(cfg, split, len(scenes))
    out = np.empty(scenes.shape, np.uint8)
    for g, name in enumerate(cfg.generators):
        rows = np.flatnonzero(sources == g)
        if len(rows):
            images = FINGERPRINTS[name](scenes[rows].astype(np.float32), cfg.strength, rng)
            out[rows] = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    record = {"source": sources.tolist(), "labelled": labelled.astype(int).tolist()}
    return out, record


def generators_dir(cfg: GeneratorsConfig, cache_root: Path) -> Path:
    return Path(cache_root) / "data" / f"shape-generators-{cfg.key()}"


def ensure_generators(cfg: GeneratorsConfig, cache_root: Path) -> Path:
    """The cache directory of ``cfg`` (the scenes generated first if absent)."""
    scenes = ensure_shapes(cfg.scenes, cache_root)
    return write_once(generators_dir(cfg, cache_root), partial(_write, cfg, scenes))


def _write(cfg: GeneratorsConfig, scenes: Path, directory: Path) -> None:
    for split in SPLITS:
        images, record = fingerprinted(cfg, np.asarray(load_split(scenes, split).images), split)
        np.save(directory / f"{split}_images.npy", images)
        (directory / f"{split}.json").write_text(json.dumps(record))
    meta = {"config": asdict(cfg), "version": GENERATOR_VERSION}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))


def load_record(directory: Path, split: str) -> dict[str, np.ndarray]:
    """A split's ``source`` (int64) and ``labelled`` (bool) per item."""
    record = json.loads((Path(directory) / f"{split}.json").read_text())
    return {
        "source": np.asarray(record["source"], dtype=np.int64),
        "labelled": np.asarray(record["labelled"], dtype=bool),
    }
