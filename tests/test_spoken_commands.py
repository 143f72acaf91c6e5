"""The spoken-commands family: the built-in generator, the class-incremental task splits and the
Fluent Speech Commands reader (a fixture written here, with a malformed row)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.continual import memory_items, task_classes
from datamodules.embedded.spoken_commands import (
    ACTIONS,
    OBJECTS,
    CommandsConfig,
    generate_split,
    intent_names,
)
from datamodules.errors import DataError, DataFileMissing
from datamodules.formats.fsc import read_fsc
from datamodules.spoken_commands import SpokenCommandsDataConfig, SpokenCommandsDataModule
from modules.towers import build_tokenizer
from tests.media_files import write_tone_wav

TINY = dict(num_train=64, num_val=32, num_test=32)


def module(tmp_path: Path, **fields) -> SpokenCommandsDataModule:
    cfg = SpokenCommandsDataConfig(cache_dir=str(tmp_path), batch_size=8, **{**TINY, **fields})
    dm = SpokenCommandsDataModule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_generation_is_deterministic_and_intents_match_the_words():
    cfg = CommandsConfig(num_train=24, num_val=4, num_test=4)
    audio, record = generate_split(cfg, "train")
    again, _ = generate_split(cfg, "train")
    assert audio.shape == (24, cfg.n_mels, cfg.audio_frames) and np.array_equal(audio, again)
    assert np.isfinite(audio.astype(np.float32)).all()
    names = intent_names(cfg)
    assert (
        len(names) == 16
        and np.bincount(record["intent"]).tolist() == [24 // 16 + 1] * 8 + [24 // 16] * 8
    )
    for words, intent in zip(record["transcript"], record["intent"], strict=True):
        action, obj = names[intent].split("_")
        spoken = words.split()
        assert action in spoken and obj in spoken
        assert len([w for w in spoken if w in ACTIONS]) == 1
        assert len([w for w in spoken if w in OBJECTS]) == 1
    other, _ = generate_split(CommandsConfig(num_train=24, num_val=4, num_test=4, seed=1), "train")
    assert not np.array_equal(audio, other)


def test_tasks_split_the_intents_disjointly_and_memory_is_balanced():
    tasks = task_classes(16, 4, seed=0)
    assert sorted(c for t in tasks for c in t) == list(range(16))
    assert [len(t) for t in tasks] == [4, 4, 4, 4]
    labels = np.arange(200) % 8
    rows = memory_items(labels, [1, 3, 5], 10, np.random.default_rng(0))
    assert np.bincount(labels[rows], minlength=8)[[1, 3, 5]].tolist() == [4, 3, 3]
    assert len(set(rows.tolist())) == 10
    with pytest.raises(ValueError, match="num_tasks"):
        task_classes(4, 5, seed=0)


def test_a_task_stage_trains_on_its_intents_plus_flagged_memory_and_tests_on_seen_ones(tmp_path):
    dm = module(tmp_path, num_tasks=4, task=3, memory_size=6)
    tasks = dm.continual_tasks
    train = dm._dataset("train")
    samples = [train[i] for i in range(len(train))]
    intents = np.array([s["label/intent"] for s in samples])
    flags = np.array([s["label/rehearsal"] for s in samples])
    assert set(intents[flags == 0]) <= set(tasks[2]) and (flags == 0).sum() == 64 * 4 // 16
    assert set(intents[flags == 1]) <= set(tasks[0] + tasks[1]) and flags.sum() == 6
    test = dm._dataset("test")
    seen = {test[i]["label/intent"] for i in range(len(test))}
    assert seen == set(tasks[0] + tasks[1] + tasks[2])
    assert "label/rehearsal" not in test[0]
    assert dm.current_task == 3 and dm.labels == {"intent": 16}
    # the tokenizer's vocabulary covers every task's words, not only this task's
    assert len(dm.training_texts()) == 64
    dm.tokenizer = build_tokenizer({"name": "transformer"}, dm.training_texts(), max_len=8)
    batch = next(iter(dm.train_dataloader()))
    assert batch["audio"].shape == (8, 40, 100) and batch["label/rehearsal"].dtype == torch.long


def test_continual_fields_are_checked():
    with pytest.raises(ValueError, match="data.task"):
        SpokenCommandsDataConfig(num_tasks=2, task=3)
    with pytest.raises(ValueError, match="data.memory_size"):
        SpokenCommandsDataConfig(memory_size=-1)


# ---------------------------------------------------------------- Fluent Speech Commands

HEADER = ",path,speakerId,transcription,action,object,location\n"


def write_fsc(root: Path, rows: dict[str, list[str]]) -> None:
    (root / "data").mkdir(parents=True, exist_ok=True)
    files = {"train": "train_data.csv", "val": "valid_data.csv", "test": "test_data.csv"}
    for split, lines in rows.items():
        (root / "data" / files[split]).write_text(HEADER + "".join(f"{x}\n" for x in lines))
        for line in lines:
            write_tone_wav(root / line.split(",")[1], rate=16000)


ROWS = [
    "0,wavs/s1/a.wav,s1,Turn on the lights,activate,lights,none",
    "1,wavs/s1/b.wav,s1,Lights off,deactivate,lights,kitchen",
    "2,wavs/s2/c.wav,s2,Turn the lights on,activate,lights,none",
]


def test_fsc_reader_and_source(tmp_path):
    write_fsc(tmp_path, {"train": ROWS, "val": ROWS[:1], "test": ROWS[1:]})
    rows = read_fsc(tmp_path / "data" / "train_data.csv", tmp_path)
    assert rows.transcripts[0] == "turn on the lights"
    assert rows.intents == ["activate|lights|none", "deactivate|lights|kitchen"] * 1 + [
        "activate|lights|none"
    ]
    cfg = SpokenCommandsDataConfig(format="fsc", root=str(tmp_path), batch_size=2)
    dm = SpokenCommandsDataModule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.class_names == {"intent": ["activate|lights|none", "deactivate|lights|kitchen"]}
    sample = dm._dataset("test")[0]
    assert sample["audio"].shape == (40, 100) and sample["label/intent"] == 1
    assert sample["text"] == "lights off"


def test_fsc_malformed_row_names_file_and_line(tmp_path):
    write_fsc(tmp_path, {"train": ROWS})
    csv_file = tmp_path / "data" / "train_data.csv"
    csv_file.write_text(HEADER + ROWS[0] + "\n" + "1,wavs/s1/b.wav,s1,Lights off,,lights,none\n")
    with pytest.raises(DataError, match=r"train_data.csv:3: empty field\(s\) \['action'\]"):
        read_fsc(csv_file, tmp_path)
    csv_file.write_text(HEADER + "1,wavs/s1/b.wav,s1,Lights off\n")
    with pytest.raises(DataError, match=r"train_data.csv:2: expected 7 fields"):
        read_fsc(csv_file, tmp_path)
    csv_file.write_text(HEADER + "1,wavs/missing.wav,s1,Lights off,deactivate,lights,none\n")
    with pytest.raises(DataFileMissing, match=r"train_data.csv:2: audio file .*missing.wav"):
        read_fsc(csv_file, tmp_path)
