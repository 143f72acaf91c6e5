"""Built-in sounds of the shapes scenes: each scene of ``datamodules.embedded.shapes`` also
sounds, as a short sequence of beeps, one per object, main object first.

A beep carries every attribute of its object: the shape sets the pitch (six fundamentals a
major third apart), the colour the timbre (which harmonics sound, or a tremolo), the size the
duration (large: 0.20-0.26 s, small: 0.10-0.14 s), the row a pitch glide (top rising, middle
flat, bottom falling) and the column the amplitude envelope (left: sharp attack and decay,
centre: a hump, right: a swell cut off at the end). The object count is the number of beeps.
So the sound tells the whole scene except the exact pixel positions and the background, and
cross-modal retrieval is possible but has to be learned: each beep is detuned by up to 3 %,
its loudness, the onset, the gaps and the noise level vary per scene, and some timbres put
their strongest partial an octave up (a yellow circle's loudest partial is a red square's
fundamental).

Stored per split: the log-mel spectrogram (``datamodules.media.log_mel``) ``float16
[N, n_mels, audio_frames]`` and each beep's ``(start, end)`` sample and fundamental.
Deterministic from :class:`SoundsConfig` (whose scenes config names the images);
:func:`ensure_sounds` writes ``<cache_root>/data/shape-sounds-<hash>`` once (atomic rename).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from datamodules.embedded.cache import config_key, write_once
from datamodules.embedded.shapes import SHAPES, SPLITS, Obj, ShapesConfig, load_split
from datamodules.media import log_mel

GENERATOR_VERSION = 1
#: Fundamental (Hz) of each shape's beep: a major third (x 1.26) apart.
PITCHES: dict[str, float] = dict(
    zip(SHAPES, (262.0, 330.0, 415.0, 523.0, 659.0, 831.0), strict=True)
)
#: Colour -> (amplitudes of harmonics 1-6, tremolo rate in Hz or 0).
TIMBRES: dict[str, tuple[tuple[float, ...], float]] = {
    "red": ((1.0, 0.0, 0.0, 0.0, 0.0, 0.0), 0.0),  # pure
    "green": ((1.0, 0.0, 0.5, 0.0, 0.3, 0.0), 0.0),  # odd harmonics (hollow)
    "blue": ((1.0, 0.5, 0.33, 0.25, 0.2, 0.17), 0.0),  # all harmonics (bright)
    "yellow": ((0.35, 1.0, 0.0, 0.0, 0.0, 0.0), 0.0),  # octave above the fundamental
    "purple": ((1.0, 0.0, 0.0, 0.7, 0.0, 0.0), 0.0),  # two octaves above
    "pink": ((1.0, 0.3, 0.0, 0.0, 0.0, 0.0), 16.0),  # tremolo
}
GLIDES = (0.12, 0.0, -0.12)  # by row (top, middle, bottom): relative pitch change over a beep
ENVELOPES = ("decay", "hump", "swell")  # by column (left, centre, right)
DURATIONS = {"large": (0.20, 0.26), "small": (0.10, 0.14)}  # seconds
DETUNE = 0.03
#: Longest scene sound: latest onset, a large beep, two small ones, two longest gaps.
LONGEST_SECONDS = 0.10 + 0.26 + 2 * 0.14 + 2 * 0.08


@dataclass(frozen=True)
class SoundsConfig:
    """Generator parameters (the scenes' and the spectrogram's); their hash names the cache
    directory. The audio lasts ``win_length + (audio_frames - 1) * hop_length`` samples."""

    scenes: ShapesConfig
    sample_rate: int = 8000
    n_mels: int = 40
    win_length: int = 200
    hop_length: int = 80
    audio_frames: int = 100

    def __post_init__(self) -> None:
        if self.sample_rate < 4000:
            raise ValueError("sample_rate must be at least 4000 (the highest pitch is 831 Hz)")
        if not 0 < self.hop_length <= self.win_length:
            raise ValueError("hop_length must be positive and at most win_length")
        if self.num_samples < LONGEST_SECONDS * self.sample_rate:
            raise ValueError(
                f"audio_frames * hop_length must cover {LONGEST_SECONDS:.2f} s, the longest "
                f"scene sound; got {self.num_samples / self.sample_rate:.2f} s"
            )

    @property
    def num_samples(self) -> int:
        return self.win_length + (self.audio_frames - 1) * self.hop_length

    def key(self) -> str:
        return config_key(self, GENERATOR_VERSION)


def envelope(kind: str, n: int) -> np.ndarray:
    """Peak-1 amplitude envelope of ``n`` samples; all start and end near zero."""
    t = (np.arange(n) + 0.5) / n
    if kind == "decay":
        return np.minimum(1.0, t / 0.04) * np.exp(-5.0 * t)
    if kind == "hump":
        return np.sin(np.pi * t)
    return np.minimum(1.0, (1.0 - t) / 0.06) * (0.1 + 0.9 * t)  # swell


def beep(obj: Obj, f0: float, n: int, sample_rate: int) -> np.ndarray:
    """The beep of one object, ``n`` samples at fundamental ``f0`` (peak about 0.3)."""
    t = np.arange(n) / n
    frequency = f0 * (1.0 + GLIDES[obj.row] * (t - 0.5))
    phase = 2 * np.pi * np.cumsum(frequency) / sample_rate
    amplitudes, tremolo = TIMBRES[obj.color]
    top = f0 * (1 + abs(GLIDES[obj.row]) / 2)
    used = [(k, a) for k, a in enumerate(amplitudes, 1) if a > 0 and k * top < 0.45 * sample_rate]
    k, a = (np.array(v, dtype=np.float64) for v in zip(*used, strict=True))
    wave = a @ np.sin(k[:, None] * phase) / a.sum()
    if tremolo:
        wave = wave * (0.6 + 0.4 * np.cos(2 * np.pi * tremolo * np.arange(n) / sample_rate))
    return 0.3 * wave * envelope(ENVELOPES[obj.col], n)


def scene_sound(
    objects: list[Obj], rng: np.random.Generator, cfg: SoundsConfig
) -> tuple[np.ndarray, list[tuple[int, int, float]]]:
    """The waveform ``float64 [num_samples]`` of a scene and its beeps ``(start, end, f0)``."""
    sr = cfg.sample_rate
    wave = np.zeros(cfg.num_samples)
    at = rng.uniform(0.02, 0.10) * sr
    beeps = []
    for obj in objects:
        n = int(rng.uniform(*DURATIONS[obj.size]) * sr)
        f0 = PITCHES[obj.shape] * rng.uniform(1 - DETUNE, 1 + DETUNE)
        start = int(at)
        wave[start : start + n] += rng.uniform(0.6, 1.0) * beep(obj, f0, n, sr)
        beeps.append((start, start + n, float(f0)))
        at += n + rng.uniform(0.04, 0.08) * sr
    wave += rng.uniform(0.002, 0.02) * rng.standard_normal(cfg.num_samples, dtype=np.float32)
    return wave, beeps


def spectrogram(waves: np.ndarray, cfg: SoundsConfig) -> np.ndarray:
    """``float32 [N, n_mels, audio_frames]`` log-mel of ``[N, num_samples]`` waveforms."""
    return log_mel(
        torch.from_numpy(np.asarray(waves, dtype=np.float32)),
        cfg.sample_rate,
        cfg.n_mels,
        cfg.win_length,
        cfg.hop_length,
    ).numpy()


def generate_split(
    cfg: SoundsConfig, objects: list[list[Obj]], split: str
) -> tuple[np.ndarray, list[list[tuple[int, int, float]]]]:
    """Log-mel ``float16 [N, n_mels, audio_frames]`` of the split's scenes and their beeps."""
    rng = np.random.default_rng([cfg.scenes.seed, SPLITS.index(split), 7])
    out = np.empty((len(objects), cfg.n_mels, cfg.audio_frames), np.float16)
    beeps = []
    chunk = 512
    for lo in range(0, len(objects), chunk):
        waves = []
        for scene in objects[lo : lo + chunk]:
            wave, spans = scene_sound(scene, rng, cfg)
            waves.append(wave)
            beeps.append(spans)
        out[lo : lo + len(waves)] = spectrogram(np.stack(waves), cfg)
    return out, beeps


def sounds_dir(cfg: SoundsConfig, cache_root: Path) -> Path:
    return Path(cache_root) / "data" / f"shape-sounds-{cfg.key()}"


def ensure_sounds(cfg: SoundsConfig, cache_root: Path, scenes_dir: Path) -> Path:
    """The cache directory of ``cfg``, generated first if absent from the scenes written to
    ``scenes_dir`` by :func:`datamodules.embedded.shapes.ensure_shapes` for ``cfg.scenes``."""
    return write_once(sounds_dir(cfg, cache_root), partial(_write_sounds, cfg, scenes_dir))


def _write_sounds(cfg: SoundsConfig, scenes_dir: Path, directory: Path) -> None:
    for split in SPLITS:
        audio, beeps = generate_split(cfg, load_split(scenes_dir, split).objects, split)
        np.save(directory / f"{split}_audio.npy", audio)
        (directory / f"{split}.json").write_text(json.dumps({"beeps": beeps}))
    meta = {"config": asdict(cfg), "version": GENERATOR_VERSION}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))


def load_beeps(directory: Path, split: str) -> list[list[tuple[int, int, float]]]:
    """Each item's beeps ``(start, end, f0)`` of a split written by :func:`ensure_sounds`."""
    beeps = json.loads((Path(directory) / f"{split}.json").read_text())["beeps"]
    return [[(int(s), int(e), float(f)) for s, e, f in item] for item in beeps]
