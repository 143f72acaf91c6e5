"""Sources of the ``shapes_depth_sounds`` family (image, depth, sound, caption): the built-in
shapes scenes with their depth maps and sounds, and VIDAL-10M manifests on disk
(datamodules/formats/vidal.py); each split handed over as an
:class:`~datamodules.items.ItemSplit`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from datamodules.embedded.shape_depth import DepthConfig, ensure_depth
from datamodules.embedded.shape_sounds import SoundsConfig, ensure_sounds
from datamodules.embedded.shapes import ensure_shapes, load_split
from datamodules.formats.vidal import read_vidal
from datamodules.items import ItemSplit, MappedItems
from datamodules.media import IMAGE_ERRORS, MediaError, decode_audio, decode_video, log_mel
from datamodules.sources import SOURCES, EmbeddedSource, Source
from datamodules.storage import Captions, MappedArray, cache_root


def _ensure_all(generator: tuple[SoundsConfig, DepthConfig], cache: Path) -> Path:
    """The scenes, then their sounds and depth maps, generated once; the depth directory."""
    sounds, depth = generator
    scenes = ensure_shapes(sounds.scenes, cache)
    ensure_sounds(sounds, cache, scenes)
    return ensure_depth(depth, cache, scenes)


@SOURCES.register("shapes_depth_sounds", "embedded")
class ShapesDepthSounds(EmbeddedSource[ItemSplit]):
    """The scenes' images, depth maps, sounds, captions and labels (the sounds are
    ``shapes_sounds``' own cache: the same files for the same scenes)."""

    ensure = staticmethod(_ensure_all)

    @staticmethod
    def generator_of(cfg: Any) -> tuple[SoundsConfig, DepthConfig]:
        sounds = cfg.sounds()
        return sounds, DepthConfig(sounds.scenes)

    def describe(self) -> str:
        sounds, depth = self.generator
        return (
            f"embedded shapes-{sounds.scenes.key()} + shape-sounds-{sounds.key()} "
            f"+ shape-depth-{depth.key()}"
        )

    def _split(self, split: str) -> ItemSplit:
        sounds_cfg, _ = self.generator
        depth = self.directory()
        cache = cache_root(self.cfg.cache_dir)
        scenes = ensure_shapes(sounds_cfg.scenes, cache)
        sounds = ensure_sounds(sounds_cfg, cache, scenes)
        data = load_split(scenes, split)
        arrays = {
            "image": MappedArray(scenes / f"{split}_images.npy"),
            "depth": MappedArray(depth / f"{split}_depth.npy"),
            "audio": MappedArray(sounds / f"{split}_audio.npy"),
        }
        return ItemSplit(
            len(data.captions),
            MappedItems(arrays),
            captions=Captions.from_lists(data.captions),
            labels=data.labels,
        )


def read_depth(path: str | Path, size: int) -> np.ndarray:
    """A depth map (any PIL mode, 16-bit millimetres in VIDAL) as ``uint8 [size, size, 1]``,
    divided by its own maximum (the official ``DepthNorm`` with ``max_depth = 0``)."""
    try:
        with Image.open(path) as image:
            values = np.asarray(image, dtype=np.float64)
    except IMAGE_ERRORS as err:
        raise MediaError(f"depth map {path} could not be read: {err}") from None
    if values.ndim == 3:
        values = values.mean(axis=2)
    values = np.clip(values, 0, None)
    scaled = values * (255.0 / max(float(values.max(initial=0)), 1e-12))
    resized = Image.fromarray(scaled.astype(np.float32)).resize(
        (size, size), Image.Resampling.BILINEAR
    )
    return np.clip(np.rint(np.asarray(resized)), 0, 255).astype(np.uint8)[..., None]


class VidalItems:
    """Item id -> ``{image, depth, audio}`` of VIDAL files: the video's middle frame
    ``uint8 [S, S, 3]``, the depth map ``uint8 [S, S, 1]`` and the sound's log-mel
    ``float32 [n_mels, frames]`` (mono at the configured rate, padded with silence or cut to
    the configured length). Plain paths and numbers: pickles for workers."""

    def __init__(self, files: list[tuple[str, str, str]], size: int, sounds: SoundsConfig):
        self.files, self.size, self.sounds = files, size, sounds

    def __call__(self, item: int) -> dict[str, np.ndarray]:
        video, audio, depth = self.files[item]
        cfg = self.sounds
        wave = decode_audio(audio, cfg.sample_rate)[: cfg.num_samples]
        wave = np.pad(wave, (0, cfg.num_samples - len(wave)))
        mel = log_mel(
            torch.from_numpy(wave), cfg.sample_rate, cfg.n_mels, cfg.win_length, cfg.hop_length
        )
        return {
            "image": decode_video(video, 1, self.size)[0],
            "depth": read_depth(depth, self.size),
            "audio": mel.numpy(),
        }


@SOURCES.register("shapes_depth_sounds", "vidal")
class VidalSource(Source[ItemSplit]):
    """VIDAL-10M manifests under ``root`` (``data.<split>_manifest``), captions of
    ``data.text_type``; no class labels."""

    @classmethod
    def check(cls, cfg: Any) -> None:
        for split in ("train", "val", "test"):
            if not getattr(cfg, f"{split}_manifest"):
                raise ValueError(f"data.format 'vidal' needs data.{split}_manifest")

    def _split(self, split: str) -> ItemSplit:
        root = self.root()
        name = getattr(self.cfg, f"{split}_manifest")
        entries = read_vidal(root / name, root, self.cfg.text_type)
        files = [(str(e.video), str(e.audio), str(e.depth)) for e in entries]
        return ItemSplit(
            len(entries),
            VidalItems(files, self.cfg.image_size, self.cfg.sounds()),
            captions=Captions.from_lists([e.captions for e in entries]),
        )
