"""Built-in depth maps of the shapes scenes: each scene of ``datamodules.embedded.shapes`` also
seen by a depth camera, as one 8-bit channel of nearness (bright = near, as the disparity maps
LanguageBind feeds its depth tower).

Rendered from the same scene parameters as the RGB image, with no colour: the background is a
ground plane receding towards the top (nearness rising from top to bottom, with sensor noise)
and every object a flat silhouette at its own nearness, drawn at random per object in
``OBJECT_NEARNESS`` (so nearness is no label: it differs between scenes of the same kind). So a
depth map shows the shapes, their sizes, positions and count, but not their colours: what it
shares with the sound (shape, size, row, column, count) differs from what it shares with the
image or the caption.

Stored per split: ``uint8 [N, S, S, 1]``. Deterministic from :class:`DepthConfig` (whose scenes
config names the images); :func:`ensure_depth` writes ``<cache_root>/data/shape-depth-<hash>``
once (atomic rename).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from datamodules.embedded.cache import config_key, write_once
from datamodules.embedded.shapes import (
    SPLITS,
    Obj,
    ShapesConfig,
    draw_object,
    half_extent,
    load_split,
)

GENERATOR_VERSION = 1
#: Nearness (0-255) of the ground plane at the top and the bottom row, and its noise (+-).
GROUND = (30, 100)
GROUND_NOISE = 6
#: Range of an object's nearness (uniform per object): always in front of the ground.
OBJECT_NEARNESS = (130, 250)


@dataclass(frozen=True)
class DepthConfig:
    """Generator parameters (the scenes'); their hash names the cache directory."""

    scenes: ShapesConfig

    def key(self) -> str:
        return config_key(self, GENERATOR_VERSION)


def depth_map(objects: list[Obj], size: int, rng: np.random.Generator) -> np.ndarray:
    """``uint8 [size, size]`` nearness of a scene: the noisy ground plane and one flat
    silhouette per object at its own random nearness."""
    ramp = np.linspace(*GROUND, size)[:, None] + np.zeros((1, size))
    noise = rng.integers(-GROUND_NOISE, GROUND_NOISE + 1, (size, size))
    image = Image.fromarray(np.clip(ramp + noise, 0, 255).astype(np.uint8), mode="L")
    draw = ImageDraw.Draw(image)
    for o in objects:
        draw_object(draw, o, half_extent(o, size), int(rng.integers(*OBJECT_NEARNESS)))
    return np.asarray(image)


def generate_split(cfg: DepthConfig, objects: list[list[Obj]], split: str) -> np.ndarray:
    """``uint8 [N, S, S, 1]`` depth maps of the split's scenes."""
    rng = np.random.default_rng([cfg.scenes.seed, SPLITS.index(split), 11])
    size = cfg.scenes.image_size
    out = np.empty((len(objects), size, size, 1), np.uint8)
    for i, scene in enumerate(objects):
        out[i, ..., 0] = depth_map(scene, size, rng)
    return out


def depth_dir(cfg: DepthConfig, cache_root: Path) -> Path:
    return Path(cache_root) / "data" / f"shape-depth-{cfg.key()}"


def ensure_depth(cfg: DepthConfig, cache_root: Path, scenes_dir: Path) -> Path:
    """The cache directory of ``cfg``, generated first if absent from the scenes written to
    ``scenes_dir`` by :func:`datamodules.embedded.shapes.ensure_shapes` for ``cfg.scenes``."""
    return write_once(depth_dir(cfg, cache_root), partial(_write_depth, cfg, scenes_dir))


def _write_depth(cfg: DepthConfig, scenes_dir: Path, directory: Path) -> None:
    for split in SPLITS:
        depth = generate_split(cfg, load_split(scenes_dir, split).objects, split)
        np.save(directory / f"{split}_depth.npy", depth)
    meta = {"config": asdict(cfg), "version": GENERATOR_VERSION}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))
