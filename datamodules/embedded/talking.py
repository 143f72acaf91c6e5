"""Built-in audio-visual data: synthetic "talking" clips of a mouth saying 2-4 words.

Each of the 20 words of :data:`VOCAB` has its own sound: two formant-like partials (a fixed
pair of mel-spaced frequencies), a pitch glide (falling, flat or rising) and an amplitude
envelope shape (one hump, two humps, rising or falling). A speaker scales the partials
slightly (timbre), modulates them at a fundamental frequency (pitch) and has a face: skin and
lip brightness, mouth position and size, a beard shadow and a shading gradient.

The mouth frames follow the audio: in each video frame the mouth opening is the mean clean
amplitude envelope over the frame's samples, and while a word sounds the mouth width is that
word's width class (narrow, neutral, wide), so some lip reading is possible. Words lie inside
the central window of ``window_frames`` frames; the clip stores ``margin_frames`` silent
frames (mouth closed, noise only) before and after it, so windows shifted by up to the margin
exist for synchrony tasks.

Everything is deterministic from :class:`TalkingConfig`; :func:`ensure_talking` writes the
splits once into ``<cache_root>/data/talking-<hash>`` (atomic rename) and later calls reuse it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from datamodules.embedded.cache import config_key, write_once

GENERATOR_VERSION = 1
SPLITS = ("train", "val", "test")
VOCAB = (
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
    "one", "two", "three", "four", "five", "red", "blue", "green", "cat", "dog",
)  # fmt: skip
#: Candidate partial frequencies (Hz), roughly equally spaced on the mel scale below 4 kHz.
PARTIALS = (320.0, 520.0, 760.0, 1050.0, 1400.0, 1850.0, 2400.0, 3100.0)
ENVELOPES = ("hump", "double", "rise", "fall")
WIDTHS = (0.7, 1.0, 1.3)  # mouth width classes, relative to the speaker's neutral width
AUDIO_SCALE = 32767.0  # int16 storage of the waveform


@dataclass(frozen=True)
class Word:
    """The sound and look of one vocabulary word."""

    partials: tuple[float, float]
    glide: float  # relative frequency change over the word
    envelope: str
    width: float


def _word_table() -> tuple[Word, ...]:
    """Fixed word designs (independent of the seed): distinct partial pairs, then cycles of
    glide, envelope and width so neighbouring words differ in several ways."""
    pairs = [(a, b) for a in range(len(PARTIALS)) for b in range(a + 2, len(PARTIALS))]
    order = np.random.default_rng(1234).permutation(len(pairs))[: len(VOCAB)]
    return tuple(
        Word(
            partials=(PARTIALS[pairs[p][0]], PARTIALS[pairs[p][1]]),
            glide=(-0.12, 0.0, 0.12)[i % 3],
            envelope=ENVELOPES[(i // 3 + i) % 4],
            width=WIDTHS[(i // 2) % 3],
        )
        for i, p in enumerate(order)
    )


WORDS = _word_table()


@dataclass(frozen=True)
class TalkingConfig:
    """Generator parameters; their hash names the cache directory."""

    num_train: int = 3000
    num_val: int = 500
    num_test: int = 500
    num_speakers: int = 8
    sample_rate: int = 8000
    fps: int = 20
    window_frames: int = 16
    margin_frames: int = 4
    frame_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.num_train, self.num_val, self.num_test) < 1:
            raise ValueError("num_train, num_val and num_test must be at least 1")
        if self.num_speakers < 2:
            raise ValueError("num_speakers must be at least 2 (distractors need another one)")
        if self.sample_rate % self.fps:
            raise ValueError("sample_rate must be a multiple of fps")
        if self.window_frames * self.sample_rate / self.fps < 0.4 * self.sample_rate:
            raise ValueError("the window must last at least 0.4 s to hold two words")
        if self.margin_frames < 1 or self.frame_size < 16:
            raise ValueError("margin_frames must be >= 1 and frame_size >= 16")

    @property
    def samples_per_frame(self) -> int:
        return self.sample_rate // self.fps

    @property
    def clip_frames(self) -> int:
        """Stored frames per clip: the window and a margin on each side."""
        return self.window_frames + 2 * self.margin_frames

    def num(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]

    def key(self) -> str:
        """Short hash of the parameters and the generator version."""
        return config_key(self, GENERATOR_VERSION)


@dataclass(frozen=True)
class Speaker:
    """Voice and face of one speaker."""

    f0: float
    timbre: float  # partial frequency scale
    skin: float
    lip: float
    mouth_y: float  # relative to the frame height
    mouth_w: float  # neutral half-width, relative to the frame size
    beard: float
    shade: float  # left-right brightness gradient


def speakers(cfg: TalkingConfig) -> list[Speaker]:
    """The speakers of ``cfg`` (drawn from the seed, shared by all splits)."""
    rng = np.random.default_rng([cfg.seed, 99])
    out = []
    for k in range(cfg.num_speakers):
        skin = rng.uniform(110, 210)
        out.append(
            Speaker(
                f0=float(np.linspace(95, 240, cfg.num_speakers)[k] * rng.uniform(0.97, 1.03)),
                timbre=float(rng.uniform(0.95, 1.05)),
                skin=float(skin),
                lip=float(skin - rng.uniform(35, 80)),
                mouth_y=float(rng.uniform(0.52, 0.62)),
                mouth_w=float(rng.uniform(0.17, 0.23)),
                beard=float(rng.uniform(0, 45)),
                shade=float(rng.uniform(-25, 25)),
            )
        )
    return out


@dataclass(frozen=True)
class TalkingSplit:
    """One split as read from the cache. ``frames`` is memory-mapped ``uint8 [N, F, S, S]``,
    ``audio`` memory-mapped ``int16 [N, F * samples_per_frame]`` (divide by
    :data:`AUDIO_SCALE`); ``spans`` holds each word's ``(start, end)`` sample in the clip."""

    frames: np.ndarray
    audio: np.ndarray
    words: list[list[int]]
    spans: list[list[list[int]]]
    speaker: np.ndarray  # int64 [N]

    def transcript(self, i: int) -> str:
        return " ".join(VOCAB[w] for w in self.words[i])


# ---------------------------------------------------------------- sound


def _envelope(shape: str, n: int) -> np.ndarray:
    """Peak-1 amplitude envelope of ``n`` samples with short fades at both ends."""
    t = (np.arange(n) + 0.5) / n
    base = {
        "hump": np.sin(np.pi * t),
        "double": 0.35 + 0.65 * np.abs(np.sin(2 * np.pi * t)),
        "rise": 0.3 + 0.7 * t,
        "fall": 1.0 - 0.7 * t,
    }[shape]
    fade = np.minimum(1.0, np.minimum(t, 1 - t) * 12)
    return base * fade


def word_sound(word: Word, speaker: Speaker, n: int, sample_rate: int) -> np.ndarray:
    """The clean waveform of one word (peak amplitude about 0.5)."""
    t = np.arange(n) / sample_rate
    glide = 1.0 + word.glide * (np.arange(n) / n - 0.5)
    wave = np.zeros(n)
    for k, f in enumerate(word.partials):
        phase = 2 * np.pi * np.cumsum(f * speaker.timbre * glide) / sample_rate
        wave += (1.0, 0.7)[k] * np.sin(phase)
    voice = 0.65 + 0.35 * np.cos(2 * np.pi * speaker.f0 * t)
    return 0.3 * wave * voice * _envelope(word.envelope, n)


def _layout(rng: np.random.Generator, cfg: TalkingConfig) -> list[tuple[int, int, int]]:
    """``(word id, start, end)`` samples in the clip: 2-4 words with gaps, inside the window."""
    sr, lo = cfg.sample_rate, cfg.margin_frames * cfg.samples_per_frame
    window = cfg.window_frames * cfg.samples_per_frame
    count = int(rng.integers(2, 5))
    durations = rng.uniform(0.10, 0.16, count) * sr
    gaps = rng.uniform(0.03, 0.07, count + 1) * sr  # lead, between words, tail
    scale = min(1.0, window / (durations.sum() + gaps.sum()))
    durations, gaps = durations * scale, gaps * scale
    ids = rng.choice(len(VOCAB), count, replace=True)
    out, at = [], lo + gaps[0]
    for w, d, g in zip(ids, durations, gaps[1:], strict=True):
        out.append((int(w), int(at), int(at + d)))
        at += d + g
    return out


# ---------------------------------------------------------------- pictures


def _ellipse(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, a, b) -> np.ndarray:
    """Soft (anti-aliased) coverage of ellipses with half-axes ``a``, ``b`` (broadcast)."""
    a, b = np.maximum(a, 1e-3), np.maximum(b, 1e-3)
    r = np.sqrt(((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2)
    return np.clip((1.0 - r) * np.minimum(a, b) + 0.5, 0.0, 1.0)


def render_mouth(
    speaker: Speaker, opening: np.ndarray, width: np.ndarray, size: int, noise: np.ndarray
) -> np.ndarray:
    """``uint8 [F, size, size]`` frames: opening in [0, 1] and width factor per frame."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cx, cy = size / 2 - 0.5, speaker.mouth_y * size
    face = speaker.skin + speaker.shade * (xx / size - 0.5) - speaker.beard * (yy > cy + 0.2 * size)
    a = (speaker.mouth_w * size * width)[:, None, None]
    b = (0.02 * size + opening * 0.16 * size)[:, None, None]
    lips = _ellipse(xx, yy, cx, cy, a + 0.07 * size, b + 0.06 * size)
    inside = _ellipse(xx, yy, cx, cy, a, b) * (b > 0.03 * size)
    image = face * (1 - lips) + speaker.lip * lips
    image = image * (1 - inside) + 25.0 * inside
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def _frame_tracks(
    spans: list[tuple[int, int, int]], envelope: np.ndarray, cfg: TalkingConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Per video frame: mean clean envelope (opening) and the sounding word's width."""
    spf = cfg.samples_per_frame
    opening = envelope.reshape(cfg.clip_frames, spf).mean(1)
    width = np.ones(cfg.clip_frames)
    for w, start, end in spans:
        first, last = start // spf, (end - 1) // spf
        width[first : last + 1] = WORDS[w].width
    return np.clip(opening / 0.8, 0.0, 1.0), width


# ---------------------------------------------------------------- splits and cache


def generate_split(cfg: TalkingConfig, split: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """Frames ``uint8 [N, F, S, S]``, audio ``int16 [N, F * spf]`` and a JSON-able record."""
    n, voices = cfg.num(split), speakers(cfg)
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split)])
    length = cfg.clip_frames * cfg.samples_per_frame
    frames = np.empty((n, cfg.clip_frames, cfg.frame_size, cfg.frame_size), np.uint8)
    audio = np.empty((n, length), np.int16)
    record: dict[str, list] = {"words": [], "spans": [], "speaker": []}
    for i in range(n):
        who = int(rng.integers(cfg.num_speakers))
        spans = _layout(rng, cfg)
        wave, envelope = np.zeros(length), np.zeros(length)
        for w, start, end in spans:
            wave[start:end] += word_sound(WORDS[w], voices[who], end - start, cfg.sample_rate)
            envelope[start:end] += _envelope(WORDS[w].envelope, end - start)
        wave += rng.normal(0.0, 0.01, length)
        audio[i] = np.round(np.clip(wave, -1, 1) * AUDIO_SCALE).astype(np.int16)
        opening, width = _frame_tracks(spans, envelope, cfg)
        noise = rng.normal(0.0, 3.0, frames.shape[1:])
        frames[i] = render_mouth(voices[who], opening, width, cfg.frame_size, noise)
        record["words"].append([w for w, _, _ in spans])
        record["spans"].append([[s, e] for _, s, e in spans])
        record["speaker"].append(who)
    return frames, audio, record


def talking_dir(cfg: TalkingConfig, cache_root: Path) -> Path:
    return Path(cache_root) / "data" / f"talking-{cfg.key()}"


def ensure_talking(cfg: TalkingConfig, cache_root: Path) -> Path:
    """The cache directory of ``cfg``, generated first if absent (atomically: see
    :func:`datamodules.embedded.cache.write_once`)."""
    return write_once(talking_dir(cfg, cache_root), partial(_write_talking, cfg))


def _write_talking(cfg: TalkingConfig, directory: Path) -> None:
    """Every split and a ``meta.json`` into ``directory``."""
    for split in SPLITS:
        frames, audio, record = generate_split(cfg, split)
        np.save(directory / f"{split}_frames.npy", frames)
        np.save(directory / f"{split}_audio.npy", audio)
        (directory / f"{split}.json").write_text(json.dumps(record))
    meta = {"config": asdict(cfg), "version": GENERATOR_VERSION, "vocab": list(VOCAB)}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))


def load_split(directory: Path, split: str) -> TalkingSplit:
    """Read one split from a directory written by :func:`ensure_talking`."""
    directory = Path(directory)
    record = json.loads((directory / f"{split}.json").read_text())
    return TalkingSplit(
        frames=np.load(directory / f"{split}_frames.npy", mmap_mode="r"),
        audio=np.load(directory / f"{split}_audio.npy", mmap_mode="r"),
        words=record["words"],
        spans=record["spans"],
        speaker=np.asarray(record["speaker"], dtype=np.int64),
    )
