"""Built-in spoken-language-understanding data: short spoken commands with an intent label
(a small Fluent Speech Commands: "turn on the lights" -> intent action=on, object=lights).

A command says an action word and an object word, in either order, sometimes with a filler
word before or after (a word that carries no intent): ``"yes on red"``, ``"cat off"``. The
intent is the (action, object) pair, so with ``num_actions`` x ``num_objects`` intents every
word is shared by several intents and a class-incremental task of new intents reuses the words
of earlier ones (as FSC's intents share "lights", "on", "off" ...). The words sound as in the
built-in talking clips (:mod:`datamodules.embedded.talking`: each word of its vocabulary has
its own partials, glide and envelope; a speaker scales the partials and modulates them at its
pitch), spoken by ``num_speakers`` speakers with random durations, gaps, loudness and noise.

Stored per split: the log-mel spectrogram (``datamodules.media.log_mel``) ``float16
[N, n_mels, audio_frames]`` and a JSON record (transcript, action, object, intent, speaker).
Deterministic from :class:`CommandsConfig`; :func:`ensure_commands` writes
``<cache_root>/data/spoken-commands-<hash>`` once (atomic rename).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from datamodules.embedded.cache import config_key, write_once
from datamodules.embedded.talking import VOCAB, WORDS, TalkingConfig, speakers, word_sound
from datamodules.media import log_mel

GENERATOR_VERSION = 1
SPLITS = ("train", "val", "test")
#: Words of the talking vocabulary used as actions, objects and fillers (disjoint sets).
ACTIONS = ("on", "off", "up", "down", "stop", "go")
OBJECTS = ("red", "blue", "green", "cat", "dog", "one", "two", "three")
FILLERS = ("yes", "no", "left", "right")
WORD_SECONDS = (0.12, 0.18)
GAP_SECONDS = (0.03, 0.07)
#: Longest command: three longest words and four longest gaps (lead, two between, tail).
LONGEST_SECONDS = 3 * WORD_SECONDS[1] + 4 * GAP_SECONDS[1]


@dataclass(frozen=True)
class CommandsConfig:
    """Generator parameters; their hash names the cache directory. The audio lasts
    ``win_length + (audio_frames - 1) * hop_length`` samples."""

    num_train: int = 3000
    num_val: int = 600
    num_test: int = 600
    num_actions: int = 4
    num_objects: int = 4
    num_speakers: int = 8
    filler_probability: float = 0.5
    noise_std: float = 0.02
    sample_rate: int = 8000
    n_mels: int = 40
    win_length: int = 200
    hop_length: int = 80
    audio_frames: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.num_train, self.num_val, self.num_test) < 1:
            raise ValueError("num_train, num_val and num_test must be at least 1")
        if not 2 <= self.num_actions <= len(ACTIONS):
            raise ValueError(f"num_actions must be in [2, {len(ACTIONS)}], got {self.num_actions}")
        if not 1 <= self.num_objects <= len(OBJECTS):
            raise ValueError(f"num_objects must be in [1, {len(OBJECTS)}], got {self.num_objects}")
        if self.num_speakers < 2:
            raise ValueError(f"num_speakers must be at least 2, got {self.num_speakers}")
        if not 0.0 <= self.filler_probability <= 1.0:
            raise ValueError("filler_probability must be in [0, 1]")
        if not 0 < self.hop_length <= self.win_length:
            raise ValueError("hop_length must be positive and at most win_length")
        if self.num_samples < LONGEST_SECONDS * self.sample_rate:
            raise ValueError(
                f"audio_frames * hop_length must cover {LONGEST_SECONDS:.2f} s, the longest "
                f"command; got {self.num_samples / self.sample_rate:.2f} s"
            )

    @property
    def num_samples(self) -> int:
        return self.win_length + (self.audio_frames - 1) * self.hop_length

    @property
    def num_intents(self) -> int:
        return self.num_actions * self.num_objects

    def num(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]

    def key(self) -> str:
        return config_key(self, GENERATOR_VERSION)


def intent_names(cfg: CommandsConfig) -> list[str]:
    """Intent ``a * num_objects + o`` is ``"<action>_<object>"``."""
    return [f"{a}_{o}" for a in ACTIONS[: cfg.num_actions] for o in OBJECTS[: cfg.num_objects]]


def command_words(
    rng: np.random.Generator, action: int, obj: int, cfg: CommandsConfig
) -> list[str]:
    """The words of one command: action and object in random order, maybe one filler word
    before or after."""
    words = [ACTIONS[action], OBJECTS[obj]]
    if rng.random() < 0.5:
        words.reverse()
    if rng.random() < cfg.filler_probability:
        filler = FILLERS[int(rng.integers(len(FILLERS)))]
        words = [filler, *words] if rng.random() < 0.5 else [*words, filler]
    return words


def command_wave(
    words: list[str], voice, rng: np.random.Generator, cfg: CommandsConfig
) -> np.ndarray:
    """``float64 [num_samples]``: the words spoken one after another with random durations,
    gaps and loudness, plus white noise."""
    sr = cfg.sample_rate
    wave = np.zeros(cfg.num_samples)
    at = rng.uniform(*GAP_SECONDS) * sr
    for word in words:
        n = int(rng.uniform(*WORD_SECONDS) * sr)
        start = int(at)
        wave[start : start + n] += rng.uniform(0.6, 1.0) * word_sound(
            WORDS[VOCAB.index(word)], voice, n, sr
        )
        at += n + rng.uniform(*GAP_SECONDS) * sr
    return wave + rng.normal(0.0, cfg.noise_std, cfg.num_samples)


def generate_split(cfg: CommandsConfig, split: str) -> tuple[np.ndarray, dict[str, list]]:
    """Log-mel ``float16 [N, n_mels, audio_frames]`` and the record of one split; intents are
    balanced (item ``i`` has intent ``i mod num_intents`` before a seeded shuffle)."""
    n = cfg.num(split)
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split), 11])
    voices = speakers(TalkingConfig(num_speakers=cfg.num_speakers, seed=cfg.seed))
    intents = rng.permutation(np.arange(n) % cfg.num_intents)
    record: dict[str, list] = {"transcript": [], "action": [], "object": [], "intent": []}
    record["speaker"] = []
    out = np.empty((n, cfg.n_mels, cfg.audio_frames), np.float16)
    chunk = 512
    for lo in range(0, n, chunk):
        waves = []
        for intent in intents[lo : lo + chunk]:
            action, obj = divmod(int(intent), cfg.num_objects)
            who = int(rng.integers(cfg.num_speakers))
            words = command_words(rng, action, obj, cfg)
            waves.append(command_wave(words, voices[who], rng, cfg))
            for key, value in zip(
                record, (" ".join(words), action, obj, int(intent), who), strict=True
            ):
                record[key].append(value)
        mel = log_mel(
            torch.from_numpy(np.stack(waves).astype(np.float32)),
            cfg.sample_rate,
            cfg.n_mels,
            cfg.win_length,
            cfg.hop_length,
        )
        out[lo : lo + len(waves)] = mel.numpy()
    return out, record


def commands_dir(cfg: CommandsConfig, cache_root: Path) -> Path:
    return Path(cache_root) / "data" / f"spoken-commands-{cfg.key()}"


def ensure_commands(cfg: CommandsConfig, cache_root: Path) -> Path:
    """The cache directory of ``cfg``, generated first if absent (atomically)."""
    return write_once(commands_dir(cfg, cache_root), partial(_write_commands, cfg))


def _write_commands(cfg: CommandsConfig, directory: Path) -> None:
    for split in SPLITS:
        audio, record = generate_split(cfg, split)
        np.save(directory / f"{split}_audio.npy", audio)
        (directory / f"{split}.json").write_text(json.dumps(record))
    meta = {"config": asdict(cfg), "version": GENERATOR_VERSION, "intents": intent_names(cfg)}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))


def load_record(directory: Path, split: str) -> dict[str, list]:
    """The JSON record of a split written by :func:`ensure_commands`."""
    return json.loads((Path(directory) / f"{split}.json").read_text())
