"""Sources of the audio-visual family: the built-in talking clips, and LRS2/LRS3-style lists
of clip files on disk; each split handed over as an :class:`AudioVisualSplit`, and the word
vocabulary of the ``words`` batch key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.embedded.talking import (
    AUDIO_SCALE,
    VOCAB,
    TalkingConfig,
    ensure_talking,
    load_split,
)
from datamodules.formats.lrs import decode_mouth_frames, read_lrs, speaker_ids
from datamodules.media import MediaError, decode_audio
from datamodules.sources import SOURCES, EmbeddedSource, Source
from datamodules.storage import Captions, FileCaptions
from modules.words import split_words

UNKNOWN_WORD = "<unk>"


@dataclass(frozen=True)
class Clip:
    """A decoded clip: frames ``uint8 [F, S, S, 1]``, the waveform from frame 0 on, and the
    first frame of the sync window."""

    frames: np.ndarray
    wave: np.ndarray
    start: int


class EmbeddedClips:
    """Clips of the built-in data, memory-mapped on first use; pickles as its paths."""

    def __init__(self, directory: Path, split: str, margin: int) -> None:
        self.directory, self.split, self.margin = directory, split, margin
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, i: int) -> Clip:
        if self._arrays is None:
            self._arrays = (
                np.load(self.directory / f"{self.split}_frames.npy", mmap_mode="r"),
                np.load(self.directory / f"{self.split}_audio.npy", mmap_mode="r"),
            )
        frames, audio = self._arrays
        wave = audio[i].astype(np.float32) / AUDIO_SCALE
        return Clip(np.array(frames[i])[..., None], wave, self.margin)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": None}


class LrsClips:
    """Clips of an LRS list, decoded with PyAV; the sync window is the middle of the clip."""

    def __init__(self, files: FileCaptions, cfg: Any) -> None:
        self.files, self.cfg = files, cfg

    def __call__(self, i: int) -> Clip:
        path, cfg = self.files.path(i), self.cfg
        frames, rate = decode_mouth_frames(path, cfg.frame_size, tuple(cfg.mouth_box))
        if abs(rate - cfg.fps) > 0.01 * cfg.fps:
            raise MediaError(f"video file {path} has {rate:g} frames/s, expected fps {cfg.fps}")
        needed = cfg.num_frames + 2 * cfg.max_shift
        if len(frames) < needed:
            raise MediaError(
                f"video file {path} has {len(frames)} frames, fewer than num_frames + "
                f"2 * max_shift = {needed}"
            )
        return Clip(
            frames, decode_audio(path, cfg.sample_rate), (len(frames) - cfg.num_frames) // 2
        )


@dataclass(frozen=True)
class AudioVisualSplit:
    """A split as the datamodule reads it: transcripts (one caption per clip), the clip
    loader and each clip's speaker id."""

    captions: Captions
    clips: EmbeddedClips | LrsClips
    speaker: np.ndarray


class AudioVisualSource(Source[AudioVisualSplit]):
    """What every audio-visual source says beyond its splits: the word vocabulary."""

    def word_vocab(self) -> list[str]:
        """Names of the word ids of the ``words`` batch key."""
        raise NotImplementedError


@SOURCES.register("audio_visual", "embedded")
class EmbeddedTalking(EmbeddedSource[AudioVisualSplit], AudioVisualSource):
    """The built-in talking clips and their fixed vocabulary."""

    name = "talking"
    ensure = staticmethod(ensure_talking)

    @staticmethod
    def generator_of(cfg: Any) -> TalkingConfig:
        return TalkingConfig(
            num_train=cfg.num_train,
            num_val=cfg.num_val,
            num_test=cfg.num_test,
            num_speakers=cfg.num_speakers,
            sample_rate=cfg.sample_rate,
            fps=cfg.fps,
            window_frames=cfg.num_frames,
            margin_frames=cfg.max_shift,
            frame_size=cfg.frame_size,
            seed=cfg.seed,
        )

    def word_vocab(self) -> list[str]:
        return list(VOCAB)

    def _split(self, split: str) -> AudioVisualSplit:
        directory = self.directory()
        data = load_split(directory, split)
        captions = Captions.from_lists([[data.transcript(i)] for i in range(len(data.speaker))])
        return AudioVisualSplit(
            captions, EmbeddedClips(directory, split, self.cfg.max_shift), data.speaker
        )


@SOURCES.register("audio_visual", "lrs")
class LrsTalking(AudioVisualSource):
    """An LRS list per split (``<split>_list``, default ``<split>.txt``) of clip ids relative
    to ``<split>_clips``; a clip's speaker is its id's directory part (the source video)."""

    def word_vocab(self) -> list[str]:
        """``<unk>`` and the sorted words of the training transcripts."""
        texts = self.split("train").captions.all_texts()
        return [UNKNOWN_WORD, *sorted({w for text in texts for w in split_words(text)})]

    def _split(self, split: str) -> AudioVisualSplit:
        root, cfg = self.root(), self.cfg
        list_file = root / (getattr(cfg, f"{split}_list") or f"{split}.txt")
        files = read_lrs(list_file, root / getattr(cfg, f"{split}_clips"))
        keys = [k.decode("utf-8") for k in files.keys]
        return AudioVisualSplit(files.captions, LrsClips(files, cfg), speaker_ids(keys))
