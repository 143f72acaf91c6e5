"""Built-in untrimmed clips with several timed events, for temporal grounding and grounded QA.

A clip has ``num_frames`` frames of two objects (distinct shape and colour, the sprites and
colours of :mod:`datamodules.embedded.moving_shapes`, rendered by its ``render``) on a noisy
grey background, and ``events_per_clip`` events in disjoint time windows ``[start, end)``
(frames; gaps of 0-2 frames between them):

- ``move``: the object moves straight (left, right, up, down) over a window of 3-5 frames;
- ``appear`` / ``disappear``: the object is switched on / off in the middle of a 2-frame window
  (only an object with no earlier event appears; nothing happens to an object after it
  disappears).

Each event has a sentence query (``"the red circle moves left"``, templates of moving_shapes)
and a question (``"what does the red circle do after the blue square moves up?"``: the
reference is the previous event, or for the first event the next one with ``before``) whose
answer is the event's action among ``num_candidates`` candidates of :data:`ANSWERS`; the
question's grounding segment is the event's window. An object may act more than once, so a
query shares its object with other moments of the clip, and moments that cut into the true one
share part of its motion: the semantic overlap between the true moment and its neighbours that
G2L's geodesic weighting is about. No two events of a clip have the same sentence.

Everything is deterministic from :class:`TimedEventsConfig`; :func:`ensure_timed_events`
writes the splits once into ``<cache_root>/data/timed_events-<hash>``.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from datamodules.embedded.cache import config_key, write_once
from datamodules.embedded.moving_shapes import (
    DIRECTIONS,
    STEP,
    Event,
    event_phrase,
    random_objects,
    render,
    sprite_sizes,
    tracks_apart,
)

GENERATOR_VERSION = 1
SPLITS = ("train", "val", "test")
#: The answer vocabulary of the questions (an event's action).
ANSWERS = tuple(f"moves {d}" for d in DIRECTIONS) + ("appears", "disappears")
OBJECTS_PER_CLIP = 2


@dataclass(frozen=True)
class TimedEventsConfig:
    """Generator parameters (split sizes in clips); their hash names the cache directory."""

    num_train: int = 1500
    num_val: int = 200
    num_test: int = 200
    num_frames: int = 16
    frame_size: int = 32
    events_per_clip: int = 3
    num_candidates: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.num_train, self.num_val, self.num_test) < 1:
            raise ValueError("num_train, num_val and num_test must be at least 1")
        if self.frame_size < 24:
            raise ValueError(f"frame_size must be at least 24, got {self.frame_size}")
        if not 1 <= self.events_per_clip <= 4:
            raise ValueError(f"events_per_clip must be in [1, 4], got {self.events_per_clip}")
        if self.num_frames < 5 * self.events_per_clip:  # room for the windows and gaps
            raise ValueError(
                f"num_frames must be at least 5 x events_per_clip = {5 * self.events_per_clip}"
            )
        if not 2 <= self.num_candidates <= len(ANSWERS):
            raise ValueError(f"num_candidates must be in [2, {len(ANSWERS)}]")

    def num(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]

    def key(self) -> str:
        return config_key(self, GENERATOR_VERSION)


@dataclass(frozen=True)
class TimedEvent:
    """Object ``obj`` moves / appears / disappears during frames ``[start, end)``."""

    obj: int
    kind: str  # "move" | "appear" | "disappear"
    direction: str | None
    start: int
    end: int

    @property
    def answer(self) -> str:
        """The event's action, one of :data:`ANSWERS`."""
        return f"moves {self.direction}" if self.kind == "move" else f"{self.kind}s"


def _events(py: random.Random, cfg: TimedEventsConfig) -> list[TimedEvent]:
    """Disjoint windows in time order, kinds drawn under the appear / disappear rules."""
    k = cfg.events_per_clip
    while True:
        kinds: list[tuple[int, str]] = []
        used: set[int] = set()
        gone: set[int] = set()
        for i in range(k):
            obj = py.choice([o for o in range(OBJECTS_PER_CLIP) if o not in gone])
            options = ["move"] * 3 + ["appear"] * (obj not in used)
            if i == k - 1 or len(gone) + 1 < OBJECTS_PER_CLIP:
                options.append("disappear")
            kind = py.choice(options)
            used.add(obj)
            if kind == "disappear":
                gone.add(obj)
            kinds.append((obj, kind))
        lengths = [py.randint(3, 5) if kind == "move" else 2 for _, kind in kinds]
        gaps = [py.randint(0, 2) for _ in range(k + 1)]
        if sum(lengths) + sum(gaps) <= cfg.num_frames:
            break
    events, t = [], gaps[0]
    for (obj, kind), length, gap in zip(kinds, lengths, gaps[1:], strict=True):
        direction = py.choice(DIRECTIONS) if kind == "move" else None
        events.append(TimedEvent(obj, kind, direction, t, t + length))
        t += length + gap
    return events


def _tracks(
    events: list[TimedEvent], starts: list[tuple[int, int]], cfg: TimedEventsConfig
) -> list[list[tuple[int, int, int]]]:
    """``(x, y, visible)`` per object and frame: a move spreads evenly over its window (the
    position changes between consecutive frames of the window, and from the frame before);
    an appearance / disappearance switches at the window's second frame."""
    _, distance = sprite_sizes(cfg.frame_size)
    tracks = []
    for obj, (x0, y0) in enumerate(starts):
        track = []
        for t in range(cfg.num_frames):
            x, y, visible = x0, y0, 1
            for e in (e for e in events if e.obj == obj):
                if e.kind == "move":
                    dx, dy = STEP[e.direction]
                    progress = min(max(t - e.start + 1, 0), e.end - e.start) / (e.end - e.start)
                    x, y = x + round(dx * distance * progress), y + round(dy * distance * progress)
                elif e.kind == "appear" and t <= e.start:
                    visible = 0
                elif e.kind == "disappear" and t > e.start:
                    visible = 0
            track.append((x, y, visible))
        tracks.append(track)
    return tracks


def _inside(track: list[tuple[int, int, int]], size: int) -> bool:
    half, _ = sprite_sizes(size)
    return all(half <= x <= size - half - 1 and half <= y <= size - half - 1 for x, y, _ in track)


def _clip(
    py: random.Random, cfg: TimedEventsConfig
) -> tuple[list[tuple[str, str]], list[TimedEvent], list[list[tuple[int, int, int]]]]:
    """Objects, events and tracks: events redrawn until their sentences differ, start
    positions rejection-sampled until every path stays inside and the objects never touch."""
    size, (half, _) = cfg.frame_size, sprite_sizes(cfg.frame_size)
    objects = random_objects(py, OBJECTS_PER_CLIP)
    while True:
        events = _events(py, cfg)
        if len({(e.obj, e.answer) for e in events}) < len(events):
            continue
        for _ in range(100):
            starts = [(py.randint(half, size - half - 1), py.randint(half, size - half - 1))]
            starts.append((py.randint(half, size - half - 1), py.randint(half, size - half - 1)))
            tracks = _tracks(events, starts, cfg)
            if all(_inside(t, size) for t in tracks) and tracks_apart(tracks[0], tracks[1], half):
                return objects, events, tracks


def sentence(event: TimedEvent, objects: list[tuple[str, str]]) -> str:
    """The event's query, with the definite article (moving_shapes' phrase templates)."""
    return event_phrase(Event(event.obj, event.kind, event.direction), objects, (1, 0, 0))


def question(events: list[TimedEvent], k: int, objects: list[tuple[str, str]]) -> str:
    """What object ``events[k].obj`` does after the previous event (before the next one for
    the first event); the answer is ``events[k].answer``."""
    shape, color = objects[events[k].obj]
    if len(events) == 1:
        return f"what does the {color} {shape} do?"
    word, ref = ("after", k - 1) if k > 0 else ("before", 1)
    return f"what does the {color} {shape} do {word} {sentence(events[ref], objects)}?"


def candidates(py: random.Random, answer: str, count: int) -> tuple[list[str], int]:
    """``count`` answers of :data:`ANSWERS` in random order, the true one among them, and its
    position."""
    others = py.sample([a for a in ANSWERS if a != answer], count - 1)
    position = py.randrange(count)
    return others[:position] + [answer] + others[position:], position


def generate_split(cfg: TimedEventsConfig, split: str) -> tuple[np.ndarray, dict]:
    """Frames ``uint8 [N, T, S, S, 3]`` and a JSON-able record per clip: objects, events,
    sentences, questions, candidates and the answer's position."""
    n, size = cfg.num(split), cfg.frame_size
    noise = np.random.default_rng([cfg.seed, SPLITS.index(split), 7])
    py = random.Random(int(noise.integers(2**62)))
    frames = np.empty((n, cfg.num_frames, size, size, 3), np.uint8)
    record: dict[str, list] = {
        k: [] for k in ("objects", "events", "sentences", "questions", "candidates", "answer")
    }
    for i in range(n):
        level = py.randint(25, 85)
        background = noise.integers(level - 8, level + 9, (size, size), dtype=np.uint8)
        objects, events, tracks = _clip(py, cfg)
        frames[i] = render(objects, tracks, background)
        record["objects"].append(objects)
        record["events"].append([asdict(e) for e in events])
        record["sentences"].append([sentence(e, objects) for e in events])
        record["questions"].append([question(events, k, objects) for k in range(len(events))])
        drawn = [candidates(py, e.answer, cfg.num_candidates) for e in events]
        record["candidates"].append([c for c, _ in drawn])
        record["answer"].append([p for _, p in drawn])
    return frames, record


def timed_events_dir(cfg: TimedEventsConfig, cache_root: Path) -> Path:
    return Path(cache_root) / "data" / f"timed_events-{cfg.key()}"


def ensure_timed_events(cfg: TimedEventsConfig, cache_root: Path) -> Path:
    """The cache directory of ``cfg``, generated first if absent (atomically)."""
    return write_once(timed_events_dir(cfg, cache_root), partial(_write, cfg))


def _write(cfg: TimedEventsConfig, directory: Path) -> None:
    for split in SPLITS:
        frames, record = generate_split(cfg, split)
        np.save(directory / f"{split}_frames.npy", frames)
        (directory / f"{split}.json").write_text(json.dumps(record))
    meta = {"config": asdict(cfg), "version": GENERATOR_VERSION, "answers": list(ANSWERS)}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))


def load_record(directory: Path, split: str) -> dict:
    """The JSON record of one split (events as :class:`TimedEvent`)."""
    record = json.loads((Path(directory) / f"{split}.json").read_text())
    record["events"] = [[TimedEvent(**e) for e in evs] for evs in record["events"]]
    return record
