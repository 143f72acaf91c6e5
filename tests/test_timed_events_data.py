"""The timed_events family: the built-in clips (events where the frames say), the Charades-STA and
NExT-GQA readers and sources, batches of both tasks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from datamodules.embedded.timed_events import (
    ANSWERS,
    TimedEventsConfig,
    generate_split,
)
from datamodules.errors import DataError
from datamodules.formats.grounding import read_charades_sta, read_durations, read_nextgqa
from datamodules.timed_events import TimedEventsDataConfig, TimedEventsDataModule
from modules.towers.tokenizer import WordTokenizer

TINY = TimedEventsConfig(num_train=12, num_val=2, num_test=2)


def test_generation_is_deterministic_and_events_are_where_the_frames_change():
    frames, record = generate_split(TINY, "train")
    again, record_again = generate_split(TINY, "train")
    assert np.array_equal(frames, again) and record == record_again
    for clip, events in zip(frames, record["events"], strict=True):
        windows = [(e["start"], e["end"]) for e in events]
        assert all(0 <= s < e <= TINY.num_frames for s, e in windows)
        assert all(e0 <= s1 for (_, e0), (s1, _) in zip(windows, windows[1:], strict=False))
        changed = {t for t in range(1, TINY.num_frames) if (clip[t] != clip[t - 1]).any()}
        # a frame differs from the previous one only inside an event's window
        allowed = {t for s, e in windows for t in range(s, e)}
        assert changed and changed <= allowed
        for e in events:  # and every event changes something
            assert changed & set(range(e["start"], e["end"]))


def test_queries_questions_and_candidates():
    _, record = generate_split(TINY, "val")
    for sentences, questions, candidates, answers, events in zip(
        record["sentences"],
        record["questions"],
        record["candidates"],
        record["answer"],
        record["events"],
        strict=True,
    ):
        assert len(set(sentences)) == len(sentences)
        for sentence, question, options, position, event in zip(
            sentences, questions, candidates, answers, events, strict=True
        ):
            answer = (
                f"moves {event['direction']}" if event["kind"] == "move" else f"{event['kind']}s"
            )
            assert sentence.endswith(answer) and question.startswith("what does the ")
            assert options[position] == answer and len(set(options)) == TINY.num_candidates
            assert set(options) <= set(ANSWERS)


@pytest.mark.parametrize("task", ["grounding", "qa"])
def test_batches_of_both_tasks(tmp_path, task):
    cfg = TimedEventsDataConfig(
        num_train=6, num_val=2, num_test=2, cache_dir=str(tmp_path), task=task, batch_size=4
    )
    dm = TimedEventsDataModule(cfg)
    dm.prepare_data()
    dm.tokenizer = WordTokenizer.build(dm.training_texts(), 32)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))  # 2 clips, 3 queries each
    assert batch["video"].shape == (6, 16, 3, 32, 32)
    assert ((batch["target/start"] < batch["target/end"]) & (batch["target/end"] <= 1)).all()
    if task == "qa":
        assert batch["text_ids_k"].shape[:2] == (6, 5) and batch["label/answer"].max() < 5
        assert dm.labels == {"answer": 5}
    else:
        assert "text_ids_k" not in batch and dm.labels == {}


def _charades(root):
    (root / "Charades_v1_train.csv").write_text("id,scene,length\nAAA,kitchen,10.0\nBBB,hall,20\n")
    (root / "charades_sta_train.txt").write_text(
        "AAA 1.0 4.0##a person opens a door.\nBBB 5 10##a person sits down.\n"
        "AAA 6.5 9.5##a person closes the door.\n"
    )
    for video in ("AAA", "BBB"):
        (root / "videos" / video).mkdir(parents=True)
        for t in range(4):
            pixels = np.full((12, 12, 3), 40 * t, np.uint8)
            Image.fromarray(pixels).save(root / "videos" / video / f"{t:03d}.png")


def test_charades_sta_reader_and_source(tmp_path):
    _charades(tmp_path)
    durations = read_durations(tmp_path / "Charades_v1_train.csv")
    queries = read_charades_sta(tmp_path / "charades_sta_train.txt", durations)
    assert queries.videos == ["AAA", "BBB"] and queries.clip_of.tolist() == [0, 1, 0]
    assert np.allclose(queries.start, [0.1, 0.25, 0.65]) and np.allclose(
        queries.end, [0.4, 0.5, 0.95]
    )
    cfg = TimedEventsDataConfig(
        format="charades_sta", root=str(tmp_path), num_frames=4, frame_size=8, batch_size=3
    )
    split = TimedEventsDataModule(cfg).source.split("train")
    assert split.num_items == 3 and split.load(2)["video"].shape == (4, 8, 8, 3)
    assert split.captions.text(1) == "a person sits down."


@pytest.mark.parametrize(
    "line, problem",
    [
        ("AAA 1.0 4.0 a person without separator", "expected '<video> <start> <end>##"),
        ("AAA one 4.0##a person", "must be numbers"),
        ("AAA 5.0 4.0##a person", "0 <= start < end"),
        ("ZZZ 1.0 2.0##a person", "no duration"),
    ],
)
def test_charades_sta_malformed_line_names_file_and_line(tmp_path, line, problem):
    path = tmp_path / "sta.txt"
    path.write_text(f"AAA 1.0 2.0##fine\n{line}\n")
    with pytest.raises(DataError, match=problem) as err:
        read_charades_sta(path, {"AAA": 10.0})
    assert f"{path}:2:" in str(err.value) and "\n" not in str(err.value)


def _nextgqa(root, answer="a cat"):
    header = "video_id,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4\n"
    (root / "val.csv").write_text(
        header
        + f"v1,100,320,240,what runs,{answer},3,TN,a dog,a cat,a cow,a man,a car\n"
        + "v2,100,320,240,why does he wave,2,7,CW,hi,bye,to greet,no,yes\n"
    )
    location = {
        "v1": {"duration": 20, "location": {"3": [[2.0, 4.0], [6.0, 8.0]]}, "fps": 30},
        "v2": {"duration": 10, "location": {"7": [[0.0, 5.0]]}, "fps": 30},
    }
    (root / "gsub_val.json").write_text(json.dumps(location))


def test_nextgqa_reader(tmp_path):
    _nextgqa(tmp_path)
    queries = read_nextgqa(tmp_path / "val.csv", tmp_path / "gsub_val.json")
    assert queries.texts == ["what runs?", "why does he wave?"]
    assert queries.answer.tolist() == [1, 2] and queries.candidates[1][2] == "to greet"
    assert np.allclose(queries.start, [0.1, 0.0]) and np.allclose(queries.end, [0.4, 0.5])
    train = read_nextgqa(tmp_path / "val.csv", None)  # training: no spans
    assert all(math.isnan(t) for t in train.start)


def test_nextgqa_malformed_row_names_file_and_line(tmp_path):
    _nextgqa(tmp_path, answer="a horse")
    with pytest.raises(DataError, match=r"val\.csv:2: answer 'a horse'"):
        read_nextgqa(tmp_path / "val.csv", tmp_path / "gsub_val.json")
    (tmp_path / "gsub_val.json").write_text(json.dumps({"v1": {"duration": 0, "location": {}}}))
    with pytest.raises(DataError, match="gsub_val.json: entry 'v1': 'duration'"):
        read_nextgqa(tmp_path / "val.csv", tmp_path / "gsub_val.json")


def test_formats_need_their_task(tmp_path):
    with pytest.raises(ValueError, match="needs data.task: qa"):
        TimedEventsDataConfig(format="nextgqa", root=str(tmp_path))
    with pytest.raises(ValueError, match="data.task must be one of"):
        TimedEventsDataConfig(task="captioning")
