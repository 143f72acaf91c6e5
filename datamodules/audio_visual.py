"""Audio-visual pairs (a voice and a talking mouth): the built-in talking clips, or LRS2/LRS3.

One audio window and one video window per item (``index == item_id``), the transcript as the
item's one caption. Batches:

- ``audio`` float32 [B, n_mels, audio_frames]: log-mel of the window's waveform (computed here
  in torch), ``audio_frames = num_frames * sample_rate / fps / hop_length``; audio frame ``t``
  is centred on the same instant as in the video (half a window of extra samples each side).
- ``video`` float32 [B, T, 1, S, S] in [-1, 1]: the mouth frames in sync with the audio.
- ``video_shifted``: the same clip's frames ``T`` starting ``label/offset`` frames later
  (``video_shifted[t] = clip[start + offset + t]``), with ``min_shift <= |offset| <= max_shift``
  and a random sign: the same face out of sync.
- ``video_distractor``: another clip's frames over its own sync window, from another speaker
  saying other words ("which of two faces is speaking").
- ``words`` long [B, max_words]: word ids of the transcript (see ``word_vocab``), -1 padded.
- ``text_ids`` / ``text_mask`` (the transcript), ``index``, ``item_id``, ``label/speaker``,
  ``label/offset``.

Training draws the offset and the distractor per sample from torch's RNG; validation and test
fix them per item from ``seed``. One augmentation draw is applied to the three clips together,
so no augmentation difference can tell the true clip from the wrong ones.
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from datamodules.config import SourceDataConfig
from datamodules.errors import DataError
from datamodules.formats.lrs import MOUTH_BOX
from datamodules.media import log_mel
from datamodules.pairs import PairDataModule, PairDataset
from datamodules.sources.audio_visual import (
    UNKNOWN_WORD,
    AudioVisualSource,
    EmbeddedClips,
    LrsClips,
)
from datamodules.storage import SPLITS
from datamodules.transforms import ClipTransform
from modules.registry import DATAMODULES
from modules.words import split_words

DISTRACTORS = ("other", "same")


@dataclass
class AudioVisualDataConfig(SourceDataConfig):
    """Data block of an experiment. ``num_*`` shape the built-in data; ``root``, ``*_list``
    and ``*_clips`` locate an LRS-style dataset (e.g. LRS2: ``train_clips: main``, real clips
    at ``fps: 25``, ``sample_rate: 16000``, ``win_length: 400``, ``hop_length: 160``; the
    formats: datamodules/sources/audio_visual.py)."""

    family: ClassVar[str] = "audio_visual"

    name: str = "audio_visual"
    # list file per split, relative to root; None: "<split>.txt"
    train_list: str | None = None
    val_list: str | None = None
    test_list: str | None = None
    # directory (relative to root) that a split's clip ids are relative to
    train_clips: str = ""
    val_clips: str = ""
    test_clips: str = ""
    mouth_box: list[float] = field(default_factory=lambda: list(MOUTH_BOX))  # x0 y0 x1 y1
    sample_rate: int = 8000
    fps: int = 20
    n_mels: int = 40
    win_length: int = 200  # samples; also the FFT size
    hop_length: int = 80
    num_frames: int = 16
    frame_size: int = 32
    min_shift: int = 2  # frames
    max_shift: int = 4
    max_text_len: int = 16
    max_words: int = 8
    num_train: int = 3000
    num_val: int = 500
    num_test: int = 500
    num_speakers: int = 8
    # video_distractor: "other" speaker (another face: identity alone can tell) or the "same"
    # speaker saying other words (only the mouth's motion can tell)
    distractor: str = "other"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.distractor not in DISTRACTORS:
            raise ValueError(f"data.distractor must be one of {DISTRACTORS}")
        if not 1 <= self.min_shift <= self.max_shift:
            raise ValueError("data.min_shift must be >= 1 and <= data.max_shift")
        if self.sample_rate % self.fps or self.samples_per_frame % self.hop_length:
            raise ValueError(
                "data.sample_rate must be a multiple of data.fps, and the samples per frame "
                "a multiple of data.hop_length (audio frames align with video frames)"
            )
        if not self.hop_length <= self.win_length <= self.hop_length + self.samples_per_frame:
            raise ValueError(
                "data.win_length must be between hop_length and hop_length + samples per frame"
            )
        if self.num_frames < 2 or self.frame_size < 8 or self.max_words < 1:
            raise ValueError("data.num_frames >= 2, data.frame_size >= 8, data.max_words >= 1")
        x0, y0, x1, y1 = self.mouth_box
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise ValueError("data.mouth_box must be 0 <= x0 < x1 <= 1, 0 <= y0 < y1 <= 1")

    @property
    def samples_per_frame(self) -> int:
        return self.sample_rate // self.fps

    @property
    def audio_frames(self) -> int:
        return self.num_frames * self.samples_per_frame // self.hop_length


def _audio_window(wave: np.ndarray, start: int, length: int) -> np.ndarray:
    """``wave[start:start + length]``, zero-padded where it runs off either end."""
    out = np.zeros(length, np.float32)
    lo, hi = max(start, 0), min(start + length, len(wave))
    if hi > lo:
        out[lo - start : hi - start] = wave[lo:hi]
    return out


def pick_distractor(
    item: int,
    speaker: np.ndarray,
    words: np.ndarray,
    draw: Callable[[], int],
    same_speaker: bool = False,
) -> int:
    """A clip id from ``draw()`` whose words differ from ``item``'s, spoken by another speaker
    (or, with ``same_speaker``, by the same one: then only the mouth's motion tells them
    apart, not the face)."""
    for _ in range(10000):
        j = draw()
        if (speaker[j] == speaker[item]) == same_speaker and not np.array_equal(
            words[j], words[item]
        ):
            return j
    who = "the same" if same_speaker else "another"
    raise RuntimeError(f"no clip of {who} speaker with other words found for item {item}")


def eval_draws(
    num: int, speaker: np.ndarray, words: np.ndarray, cfg: AudioVisualDataConfig, split: str
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed ``(offsets, distractors)`` per item of an evaluation split, from the seed."""
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split), 17])
    sizes = rng.integers(cfg.min_shift, cfg.max_shift + 1, num)
    offsets = sizes * rng.choice(np.array([-1, 1]), num)
    distractors = [
        pick_distractor(i, speaker, words, lambda: int(rng.integers(num)), cfg.distractor == "same")
        for i in range(num)
    ]
    return offsets.astype(np.int64), np.array(distractors, dtype=np.int64)


class LoadTalking:
    """Item id -> audio, the sync / shifted / distractor videos, word ids, offset label."""

    def __init__(
        self,
        clips: EmbeddedClips | LrsClips,
        cfg: AudioVisualDataConfig,
        speaker: np.ndarray,
        words: np.ndarray,
        transform: ClipTransform,
        fixed: tuple[np.ndarray, np.ndarray] | None,
    ) -> None:
        self.clips, self.cfg, self.speaker, self.words = clips, cfg, speaker, words
        self.transform, self.fixed = transform, fixed

    def _draw(self, item: int) -> tuple[int, int]:
        """Offset and distractor: fixed in evaluation, from torch's RNG in training."""
        if self.fixed is not None:
            return int(self.fixed[0][item]), int(self.fixed[1][item])
        cfg = self.cfg
        size = int(torch.randint(cfg.min_shift, cfg.max_shift + 1, ()).item())
        sign = 1 if torch.rand(()).item() < 0.5 else -1
        n = len(self.speaker)
        j = pick_distractor(
            item,
            self.speaker,
            self.words,
            lambda: int(torch.randint(n, ()).item()),
            cfg.distractor == "same",
        )
        return sign * size, j

    def __call__(self, item: int) -> dict[str, Any]:
        cfg, t = self.cfg, self.cfg.num_frames
        offset, other_id = self._draw(item)
        clip, other = self.clips(item), self.clips(other_id)
        stack = np.concatenate(
            [
                clip.frames[clip.start : clip.start + t],
                clip.frames[clip.start + offset : clip.start + offset + t],
                other.frames[other.start : other.start + t],
            ]
        )
        video, shifted, distractor = self.transform(stack).split(t)
        pad = (cfg.win_length - cfg.hop_length) // 2
        length = t * cfg.samples_per_frame + cfg.win_length - cfg.hop_length
        wave = _audio_window(clip.wave, clip.start * cfg.samples_per_frame - pad, length)
        audio = log_mel(
            torch.from_numpy(wave), cfg.sample_rate, cfg.n_mels, cfg.win_length, cfg.hop_length
        )
        return {
            "audio": audio,
            "video": video,
            "video_shifted": shifted,
            "video_distractor": distractor,
            "words": torch.from_numpy(self.words[item]),
            "label/offset": offset,
        }


def word_ids(texts: list[str], vocab: list[str], max_words: int) -> np.ndarray:
    """``int64 [N, max_words]`` word ids (unknown words -> ``vocab.index("<unk>")``), -1 pad."""
    index = {w: i for i, w in enumerate(vocab)}
    out = np.full((len(texts), max_words), -1, dtype=np.int64)
    for row, text in enumerate(texts):
        ids = [index.get(w, index.get(UNKNOWN_WORD, -1)) for w in split_words(text)]
        out[row, : min(len(ids), max_words)] = ids[:max_words]
    return out


@DATAMODULES.register("audio_visual", AudioVisualDataConfig)
class AudioVisualDataModule(PairDataModule):
    """Voice-mouth pairs; with no arguments, the built-in talking clips (generated on first
    use into the cache)."""

    source: AudioVisualSource

    def __init__(self, cfg: AudioVisualDataConfig | None = None, tokenizer: Any = None) -> None:
        super().__init__(cfg or AudioVisualDataConfig(), tokenizer)

    modalities = ("audio", "video")

    def tower_context(self) -> dict[str, Any]:
        return {
            "image_size": self.cfg.frame_size,
            "in_channels": 1,
            "num_frames": self.cfg.num_frames,
            "n_mels": self.cfg.n_mels,
            "audio_frames": self.cfg.audio_frames,
            "max_text_len": self.cfg.max_text_len,
        }

    @property
    def choice_tasks(self) -> dict[str, tuple[str, str]]:
        return {
            "sync": ("video_shifted", "video"),
            "active_speaker": ("video_distractor", "video"),
        }

    @property
    def word_vocab(self) -> list[str]:
        """Names of the ids in ``words``: the built-in vocabulary, or ``<unk>`` and the sorted
        words of the LRS training transcripts."""
        return self.source.word_vocab()

    def describe(self) -> str:
        """One line for logs: source and loaded split sizes."""
        sizes = ", ".join(f"{split} {len(ds)} clips" for split, ds in self.datasets.items())
        return f"audio_visual ({self.source.describe()}): {sizes or 'not set up'}"

    def _dataset(self, split: str) -> PairDataset:
        train = split == "train"
        vocab = self.word_vocab  # first: LRS reads (and checks) the train split for it
        data = self.source.split(split)
        captions, speaker = data.captions, data.speaker
        if self.cfg.distractor == "other" and len(np.unique(speaker)) < 2:
            raise DataError(f"{split} split has one speaker; distractors need at least two")
        words = word_ids(captions.all_texts(), vocab, self.cfg.max_words)
        fixed = None if train else eval_draws(len(speaker), speaker, words, self.cfg, split)
        transform = ClipTransform(self.cfg.augment.train if train else self.cfg.augment.eval)
        load = LoadTalking(data.clips, self.cfg, speaker, words, transform, fixed)
        return PairDataset(captions, load, {"speaker": speaker}, pairs="caption")
