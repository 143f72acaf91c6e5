"""Spoken commands with intents (spoken language understanding), whole or as class-incremental
tasks: the built-in commands (datamodules/embedded/spoken_commands.py) or Fluent Speech
Commands on disk (``data.format: fsc``, ``data.root``: the folder with ``data/`` and ``wavs/``).

Batches: ``audio`` float32 [B, n_mels, audio_frames] (log-mel), ``text_ids`` / ``text_mask``
[B, L] (the transcript), ``label/intent`` long [B]; in continual training also
``label/rehearsal`` (1: a rehearsal-memory item of an earlier task). Modalities ("audio",
"text"); retrieval is evaluated between them.

Continual (``num_tasks > 1``, ``task = k`` in 1..num_tasks; datamodules/continual.py): the
intents are cut into ``num_tasks`` disjoint tasks (a permutation seeded by ``seed``); stage k
trains on task k's intents plus ``memory_size`` rehearsal items of earlier intents and is
evaluated on the intents of tasks 1..k. ``task = 0``: every intent at once (joint training).
The text tokenizer learns its vocabulary from every training transcript, not only the
current task's (a pretrained text encoder knows every word, as in the paper's setting).
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: environment for lightning's imports)

from dataclasses import dataclass
from typing import Any, ClassVar

import datamodules.sources.spoken_commands  # noqa: F401  (registers the family's sources)
from datamodules.continual import task_classes, task_split
from datamodules.embedded.spoken_commands import CommandsConfig
from datamodules.items import ItemDataset, ItemsDataConfig, ItemsDataModule, Transform, as_float
from modules.registry import DATAMODULES


@dataclass
class SpokenCommandsDataConfig(ItemsDataConfig):
    """The commands' generator fields, the log-mel parameters (also used to read FSC's wavs),
    and the continual fields ``num_tasks``, ``task``, ``memory_size``."""

    family: ClassVar[str] = "spoken_commands"

    name: str = "spoken_commands"
    num_train: int = 3000
    num_val: int = 600
    num_test: int = 600
    num_actions: int = 4
    num_objects: int = 4
    num_speakers: int = 8
    filler_probability: float = 0.5
    noise_std: float = 0.02
    max_text_len: int = 8
    sample_rate: int = 8000
    n_mels: int = 40
    win_length: int = 200
    hop_length: int = 80
    audio_frames: int = 100
    num_tasks: int = 1
    task: int = 0  # 0: every intent (joint); k: stage of task k (1-based)
    memory_size: int = 0  # rehearsal items of earlier tasks in a task's training split

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_tasks < 1:
            raise ValueError(f"data.num_tasks must be >= 1, got {self.num_tasks}")
        if not 0 <= self.task <= self.num_tasks:
            raise ValueError(f"data.task must be in [0, {self.num_tasks}], got {self.task}")
        if self.memory_size < 0:
            raise ValueError(f"data.memory_size must be >= 0, got {self.memory_size}")
        if self.format == "embedded":
            self.commands()

    @property
    def num_samples(self) -> int:
        """Waveform samples per item (FSC's wavs are cut or padded to it)."""
        return self.win_length + (self.audio_frames - 1) * self.hop_length

    def commands(self) -> CommandsConfig:
        """The built-in generator's config (validated)."""
        return CommandsConfig(
            num_train=self.num_train,
            num_val=self.num_val,
            num_test=self.num_test,
            num_actions=self.num_actions,
            num_objects=self.num_objects,
            num_speakers=self.num_speakers,
            filler_probability=self.filler_probability,
            noise_std=self.noise_std,
            sample_rate=self.sample_rate,
            n_mels=self.n_mels,
            win_length=self.win_length,
            hop_length=self.hop_length,
            audio_frames=self.audio_frames,
            seed=self.seed,
        )


@DATAMODULES.register("spoken_commands", SpokenCommandsDataConfig)
class SpokenCommandsDataModule(ItemsDataModule):
    """Audio and transcript of each command, its intent; optionally one continual task."""

    name = "spoken_commands"
    modalities = ("audio", "text")
    pairs = (("audio", "text"),)

    def __init__(self, cfg: SpokenCommandsDataConfig | None = None, tokenizer: Any = None) -> None:
        super().__init__(cfg or SpokenCommandsDataConfig(), tokenizer)
        self._intents: list[str] | None = None
        self._task_splits: dict[tuple[str, bool], Any] = {}

    @property
    def class_names(self) -> dict[str, list[str]]:
        if self._intents is None:
            self._intents = self.source.intent_names()
        return {"intent": list(self._intents)}

    @property
    def continual_tasks(self) -> list[list[int]]:
        """The intent ids of each task, in task order."""
        return task_classes(self.labels["intent"], self.cfg.num_tasks, self.cfg.seed)

    @property
    def current_task(self) -> int:
        """The stage's task (1-based); joint training counts as the last one."""
        return self.cfg.task or self.cfg.num_tasks

    def tower_context(self) -> dict[str, Any]:
        return {
            "n_mels": self.cfg.n_mels,
            "audio_frames": self.cfg.audio_frames,
            "max_text_len": self.cfg.max_text_len,
        }

    def _transforms(self, train: bool) -> dict[str, Transform]:
        return {"audio": as_float}

    def _task_split(self, split: str, train: bool) -> Any:
        """The split as this stage sees it (an ItemSplit; computed once)."""
        data = self.source.split(split)
        if not self.cfg.task:
            return data
        if (split, train) not in self._task_splits:
            self._task_splits[split, train] = self._select(data, train)
        return self._task_splits[split, train]

    def _select(self, data: Any, train: bool) -> Any:
        return task_split(
            data,
            "intent",
            self.continual_tasks,
            self.cfg.task,
            self.cfg.memory_size,
            train,
            self.cfg.seed,
        )

    def num_items(self, split: str) -> int:
        return self._task_split(split, split == "train").num_items

    def _dataset(self, split: str, train: bool | None = None) -> ItemDataset:
        train = split == "train" if train is None else train
        # the probe bank (train split in eval mode) is the task's training items too
        data = self._task_split(split, split == "train")
        return ItemDataset(data, self._transforms(train), {}, train)
