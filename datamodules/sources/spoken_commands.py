"""Sources of the spoken-commands family: the built-in commands and Fluent Speech Commands on
disk (``data.format: fsc``); each split handed over as an :class:`~datamodules.items.ItemSplit`
(``audio`` log-mel, the transcript as the one caption, ``label/intent``), and the intents'
names (:meth:`intent_names`, in label-id order)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.embedded.spoken_commands import (
    CommandsConfig,
    ensure_commands,
    intent_names,
    load_record,
)
from datamodules.errors import DataError
from datamodules.formats.fsc import SPLIT_FILES, FSCList, read_fsc
from datamodules.items import ItemSplit, MappedItems
from datamodules.media import decode_audio, log_mel
from datamodules.sources import SOURCES, EmbeddedSource, Source
from datamodules.storage import Captions, MappedArray


@SOURCES.register("spoken_commands", "embedded")
class EmbeddedCommands(EmbeddedSource[ItemSplit]):
    """The built-in commands."""

    name = "spoken-commands"
    ensure = staticmethod(ensure_commands)

    @staticmethod
    def generator_of(cfg: Any) -> CommandsConfig:
        return cfg.commands()

    def intent_names(self) -> list[str]:
        return intent_names(self.generator)

    def _split(self, split: str) -> ItemSplit:
        directory = self.directory()
        record = load_record(directory, split)
        return ItemSplit(
            len(record["intent"]),
            MappedItems({"audio": MappedArray(directory / f"{split}_audio.npy")}),
            captions=Captions.from_lists([[t] for t in record["transcript"]]),
            labels={"intent": np.asarray(record["intent"], dtype=np.int64)},
        )


class WavLogMel:
    """Item ``i`` -> ``{"audio": float32 [n_mels, audio_frames]}``: the log-mel of the wav,
    the waveform cut or zero-padded at its end to the configured length."""

    def __init__(self, paths: list[Path], cfg: Any) -> None:
        self.paths, self.cfg = paths, cfg

    def __call__(self, i: int) -> dict[str, np.ndarray]:
        cfg = self.cfg
        wave = decode_audio(self.paths[i], cfg.sample_rate)[: cfg.num_samples]
        wave = np.pad(wave, (0, cfg.num_samples - len(wave)))
        mel = log_mel(
            torch.from_numpy(wave), cfg.sample_rate, cfg.n_mels, cfg.win_length, cfg.hop_length
        )
        return {"audio": mel.numpy()}


@SOURCES.register("spoken_commands", "fsc")
class FluentSpeechCommands(Source[ItemSplit]):
    """FSC under ``data.root`` (``data/{train,valid,test}_data.csv`` and the wavs). Intent ids
    follow the sorted intents of the training split; another split's unknown intent is an
    error naming the file."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._lists: dict[str, FSCList] = {}

    def describe(self) -> str:
        return f"fsc at {self.cfg.root}"

    def _list(self, split: str) -> FSCList:
        """The rows of a split's CSV file (read and checked once)."""
        if split not in self._lists:
            root = self.root()
            self._lists[split] = read_fsc(root / "data" / SPLIT_FILES[split], root)
        return self._lists[split]

    def intent_names(self) -> list[str]:
        return sorted(set(self._list("train").intents))

    def _split(self, split: str) -> ItemSplit:
        rows = self._list(split)
        names = {name: i for i, name in enumerate(self.intent_names())}
        unknown = sorted(set(rows.intents) - set(names))
        if unknown:
            csv_file = self.root() / "data" / SPLIT_FILES[split]
            raise DataError(f"{csv_file}: intent(s) {unknown[:3]} not in the training split")
        return ItemSplit(
            len(rows.paths),
            WavLogMel(rows.paths, self.cfg),
            captions=Captions.from_lists([[t] for t in rows.transcripts]),
            labels={"intent": np.asarray([names[t] for t in rows.intents], dtype=np.int64)},
        )
