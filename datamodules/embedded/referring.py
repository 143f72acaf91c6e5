"""Built-in referring data: scenes of four shapes, one of them referred to by a text expression
("the red circle on the left") and by the same expression spoken, with its pixel mask.

Still images (not clips: EPCFormer segments videos; one frame per item here). Each scene holds
the referred object and three distractors that share attributes with it, so every word of the
expression is needed to pick it out:

- a *twin* of the same colour and shape on the same row (the expression says ``on the left`` /
  ``on the right``) or the same column (``at the top`` / ``at the bottom``);
- a *colour distractor*: another colour, the same shape;
- a *shape distractor*: the same colour, another shape.

So colour alone leaves three candidates, colour + shape two, and only the position word decides.
Objects sit in the cells of a 4 x 4 grid (jittered), ``object_size`` pixels wide, anti-aliased
(:func:`datamodules.embedded.shape_sizes.coverage`); the mask is the coverage > 0.5.

The spoken expression is synthesised from the word sounds of the talking data
(:func:`datamodules.embedded.talking.word_sound` and its speakers): each word of the expression
has a fixed sound (the talking vocabulary's own for the words it has: red, blue, green, left,
right, on; designed the same way for the others), said by one of ``num_speakers`` speakers
(pitch and timbre), at a random tempo, in white noise whose standard deviation is drawn
uniformly up to ``noise`` x 0.5 (the words' peak amplitude is about 0.5). The audio is
therefore harder than the text: the audio encoder must learn to recognise words through
speaker, tempo and noise variation, while the text encoder gets the words as tokens. Stored
as log-mel (``datamodules.media.log_mel``).

Deterministic from :class:`ReferringConfig`; :func:`ensure_referring` writes
``<cache_root>/data/referring-<hash>`` once (atomic rename).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from datamodules.embedded.cache import config_key, write_once
from datamodules.embedded.shape_sizes import coverage
from datamodules.embedded.shapes import COLORS as ALL_COLORS
from datamodules.embedded.talking import (
    ENVELOPES,
    PARTIALS,
    SPLITS,
    VOCAB,
    WORDS,
    Speaker,
    TalkingConfig,
    Word,
    speakers,
    word_sound,
)
from datamodules.media import log_mel

GENERATOR_VERSION = 1
COLORS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle", "diamond")
SIDES = {"horizontal": ("left", "right"), "vertical": ("top", "bottom")}
GRID = 4  # cells per side
#: Every word an expression uses.
EXPRESSION_WORDS = ("the", "on", "at", *COLORS, *SHAPES, "left", "right", "top", "bottom")


def _expression_words() -> dict[str, Word]:
    """The sound of each expression word: the talking vocabulary's where it has the word,
    otherwise a fixed design in its style (a pair of its partials, a glide, an envelope)."""
    rng = np.random.default_rng(4321)
    out: dict[str, Word] = {}
    for i, word in enumerate(EXPRESSION_WORDS):
        if word in VOCAB:
            out[word] = WORDS[VOCAB.index(word)]
            continue
        a = int(rng.integers(len(PARTIALS) - 2))
        b = int(rng.integers(a + 2, len(PARTIALS)))
        out[word] = Word(
            partials=(PARTIALS[a], PARTIALS[b]),
            glide=(-0.12, 0.0, 0.12)[i % 3],
            envelope=ENVELOPES[(i + a) % len(ENVELOPES)],
            width=1.0,
        )
    return out


SOUNDS = _expression_words()


@dataclass(frozen=True)
class ReferringConfig:
    """Generator parameters; their hash names the cache directory. The audio lasts
    ``win_length + (audio_frames - 1) * hop_length`` samples (at least 1 s)."""

    num_train: int = 4000
    num_val: int = 500
    num_test: int = 1000
    image_size: int = 48
    object_size: float = 9.0
    num_speakers: int = 8
    noise: float = 0.3
    sample_rate: int = 8000
    n_mels: int = 40
    win_length: int = 200
    hop_length: int = 80
    audio_frames: int = 120
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.num_train, self.num_val, self.num_test) < 1:
            raise ValueError("num_train, num_val and num_test must be at least 1")
        if not 4 <= self.object_size <= self.image_size / GRID - 2:
            raise ValueError(
                f"object_size must lie in [4, image_size / {GRID} - 2], got {self.object_size}"
            )
        if self.num_speakers < 2 or self.noise < 0:
            raise ValueError("num_speakers must be at least 2 and noise at least 0")
        if not 0 < self.hop_length <= self.win_length:
            raise ValueError("hop_length must be positive and at most win_length")
        if self.num_samples < self.sample_rate:
            raise ValueError("audio_frames * hop_length must cover at least 1 s")

    @property
    def num_samples(self) -> int:
        return self.win_length + (self.audio_frames - 1) * self.hop_length

    def num(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]

    def key(self) -> str:
        return config_key(self, GENERATOR_VERSION)


@dataclass(frozen=True)
class Shape:
    color: str
    shape: str
    cell: tuple[int, int]  # (row, column)


def sample_scene(rng: np.random.Generator) -> tuple[list[Shape], str]:
    """Four objects (the referred one first) and its expression."""
    color, other_color = rng.choice(len(COLORS), 2, replace=False)
    shape, other_shape = rng.choice(len(SHAPES), 2, replace=False)
    axis = ("horizontal", "vertical")[int(rng.integers(2))]
    line = int(rng.integers(GRID))
    a, b = rng.choice(GRID, 2, replace=False)
    first, second = ((line, a), (line, b)) if axis == "horizontal" else ((a, line), (b, line))
    taken = {first, second}
    free = [(r, c) for r in range(GRID) for c in range(GRID) if (r, c) not in taken]
    cells = [free[k] for k in rng.choice(len(free), 2, replace=False)]
    c, s = COLORS[color], SHAPES[shape]
    objects = [
        Shape(c, s, first),
        Shape(c, s, second),
        Shape(COLORS[other_color], s, cells[0]),
        Shape(c, SHAPES[other_shape], cells[1]),
    ]
    along = 1 if axis == "horizontal" else 0
    side = SIDES[axis][int(first[along] > second[along])]
    where = "on the" if axis == "horizontal" else "at the"
    return objects, f"the {c} {s} {where} {side}"


def render(
    objects: list[Shape], rng: np.random.Generator, cfg: ReferringConfig
) -> tuple[np.ndarray, np.ndarray]:
    """``uint8 [S, S, 3]`` image and the first object's ``uint8 [S, S]`` mask (coverage > 0.5)."""
    s, cell = cfg.image_size, cfg.image_size / GRID
    level = rng.integers(25, 86)
    image = rng.integers(level - 8, level + 9, (s, s, 1)).astype(np.float32).repeat(3, axis=2)
    mask = np.zeros((s, s), np.uint8)
    jitter = (cell - cfg.object_size) / 2 - 0.5
    for k, obj in enumerate(objects):
        x = (obj.cell[1] + 0.5) * cell + rng.uniform(-jitter, jitter)
        y = (obj.cell[0] + 0.5) * cell + rng.uniform(-jitter, jitter)
        alpha = coverage(obj.shape, x, y, cfg.object_size, s)[..., None]
        image = image * (1 - alpha) + np.asarray(ALL_COLORS[obj.color], np.float32) * alpha
        if k == 0:
            mask = (alpha[..., 0] > 0.5).astype(np.uint8)
    return np.rint(image).astype(np.uint8), mask


def speak(
    expression: str, voice: Speaker, rng: np.random.Generator, cfg: ReferringConfig
) -> np.ndarray:
    """The waveform ``float64 [num_samples]`` of ``expression`` said by ``voice``, with a random
    tempo and a random level of white noise."""
    sr = cfg.sample_rate
    words = expression.split()
    durations = rng.uniform(0.09, 0.15, len(words)) * sr
    gaps = rng.uniform(0.02, 0.06, len(words) + 1) * sr
    scale = min(1.0, 0.95 * cfg.num_samples / (durations.sum() + gaps.sum()))
    durations, gaps = durations * scale, gaps * scale
    wave = np.zeros(cfg.num_samples)
    at = gaps[0]
    for word, d, g in zip(words, durations, gaps[1:], strict=True):
        n = int(d)
        wave[int(at) : int(at) + n] += word_sound(SOUNDS[word], voice, n, sr)
        at += d + g
    return wave + rng.uniform(0, cfg.noise) * 0.5 * rng.standard_normal(cfg.num_samples)


def generate_split(cfg: ReferringConfig, split: str) -> tuple[np.ndarray, ...]:
    """Images ``uint8 [N, S, S, 3]``, masks ``uint8 [N, S, S]``, log-mel ``float16
    [N, n_mels, audio_frames]`` and a JSON-able record (``text``, ``speaker``, ``color``,
    ``shape``, ``side``: the expression's word ids)."""
    n, s = cfg.num(split), cfg.image_size
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split), 11])
    voices = speakers(TalkingConfig(num_speakers=cfg.num_speakers, seed=cfg.seed))
    images = np.empty((n, s, s, 3), np.uint8)
    masks = np.empty((n, s, s), np.uint8)
    waves = np.empty((n, cfg.num_samples), np.float32)
    record: dict[str, list] = {"text": [], "speaker": []}
    for i in range(n):
        objects, expression = sample_scene(rng)
        images[i], masks[i] = render(objects, rng, cfg)
        who = int(rng.integers(cfg.num_speakers))
        waves[i] = speak(expression, voices[who], rng, cfg)
        record["text"].append(expression)
        record["speaker"].append(who)
    mels = log_mel(
        torch.from_numpy(waves), cfg.sample_rate, cfg.n_mels, cfg.win_length, cfg.hop_length
    )
    return images, masks, mels.numpy().astype(np.float16), record


def expression_id(expression: str) -> int:
    """The class of an expression (colour x shape x side: 64 classes): the expressions that
    mean the same thing, whatever scene they refer in."""
    _, color, shape, _, _, side = expression.split()
    sides = [w for pair in SIDES.values() for w in pair]
    return (COLORS.index(color) * len(SHAPES) + SHAPES.index(shape)) * len(sides) + sides.index(
        side
    )


def referring_dir(cfg: ReferringConfig, cache_root: Path) -> Path:
    return Path(cache_root) / "data" / f"referring-{cfg.key()}"


def ensure_referring(cfg: ReferringConfig, cache_root: Path) -> Path:
    """The cache directory of ``cfg``, generated first if absent."""
    return write_once(referring_dir(cfg, cache_root), partial(_write, cfg))


def _write(cfg: ReferringConfig, directory: Path) -> None:
    for split in SPLITS:
        images, masks, mels, record = generate_split(cfg, split)
        np.save(directory / f"{split}_images.npy", images)
        np.save(directory / f"{split}_masks.npy", masks)
        np.save(directory / f"{split}_audio.npy", mels)
        (directory / f"{split}.json").write_text(json.dumps(record))
    meta = {"config": asdict(cfg), "version": GENERATOR_VERSION, "words": EXPRESSION_WORDS}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))
