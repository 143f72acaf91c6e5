"""Built-in video-text data: short clips of coloured shapes that move, appear or disappear.

A clip has ``num_frames`` frames (even, split into two halves) of one or two objects (5 shapes,
6 colours) on a static noisy grey background. A one-object clip holds one event over the whole
clip; a two-object clip holds one event per half: the first object's event, then the second's.
An event is a straight move (left, right, up, down) or an appearance / disappearance halfway
through its half. Objects never touch, so every object is fully visible while present.

Time is built in so that a model that ignores frame order fails on part of the data:

- the direction of a move is visible only from frame order (the frames of "moves left",
  reversed, are the frames of "moves right");
- a fraction of the clips are sibling pairs: a clip and its exact time reversal (same objects,
  same background, same set of frames), chosen so that the two events map onto each other
  ("a red square moves left, then a blue circle moves right" vs "a blue circle moves left,
  then a red square moves right"; "A appears, then B disappears" vs "B appears, then A
  disappears"). Sibling captions use the same template choices, so each caption of one sibling
  has exactly the bag of words of the matching caption of the other.

Everything is deterministic from :class:`MovingShapesConfig`; :func:`ensure_moving_shapes`
writes the splits once into ``<cache_root>/data/moving_shapes-<hash>`` (atomic rename).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from datamodules.embedded.cache import config_key, write_once
from datamodules.embedded.shapes import COLORS

GENERATOR_VERSION = 1
SPLITS = ("train", "val", "test")
CAPTIONS_PER_CLIP = 5
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
DIRECTIONS = ("left", "right", "up", "down")
TASKS = ("direction", "shape", "color")
STEP = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}

_ARTICLES = ("a", "the")
_MOVE_VERBS = ("moves", "slides", "goes", "travels")
_DIRECTION_WORDS = {
    "left": ("left", "to the left"),
    "right": ("right", "to the right"),
    "up": ("up", "upward"),
    "down": ("down", "downward"),
}
_APPEAR = ("appears", "comes into view", "pops into view")
_DISAPPEAR = ("disappears", "vanishes", "goes out of view")
_COUNT_WORDS = ("one shape", "two shapes")
# two events in temporal order E1, E2; the last template mentions them in reverse order
_CONNECTORS = (
    "{0}, then {1}",
    "{0} and after that {1}",
    "first {0}, then {1}",
    "{0} before {1}",
    "{1} after {0}",
)


@dataclass(frozen=True)
class MovingShapesConfig:
    """Generator parameters; their hash names the cache directory."""

    num_train: int = 4000
    num_val: int = 500
    num_test: int = 500
    num_frames: int = 8
    frame_size: int = 32
    sibling_fraction: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.num_train, self.num_val, self.num_test) < 1:
            raise ValueError("num_train, num_val and num_test must be at least 1")
        if self.num_frames < 4 or self.num_frames % 2:
            # two halves of equal, even length keep a reversed clip a valid clip
            raise ValueError(f"num_frames must be even and at least 4, got {self.num_frames}")
        if self.frame_size < 24:
            raise ValueError(f"frame_size must be at least 24, got {self.frame_size}")
        if not 0.0 <= self.sibling_fraction <= 1.0:
            raise ValueError("sibling_fraction must be in [0, 1]")

    def num(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]

    def key(self) -> str:
        """Short hash of the parameters and the generator version."""
        return config_key(self, GENERATOR_VERSION)


@dataclass(frozen=True)
class Event:
    """Object ``obj`` (index into the clip's objects) moves, appears or disappears."""

    obj: int
    kind: str  # "move" | "appear" | "disappear"
    direction: str | None = None


@dataclass(frozen=True)
class MovingShapesSplit:
    """One split as read from the cache; ``frames`` is memory-mapped ``uint8 [N, T, H, W, 3]``.

    ``tracks[i][o][t]`` is ``(x, y, visible)`` of object ``o`` of clip ``i`` in frame ``t``."""

    frames: np.ndarray
    captions: list[list[str]]
    objects: list[list[tuple[str, str]]]  # (shape, colour) per object
    events: list[list[Event]]  # in temporal order
    tracks: list[list[list[tuple[int, int, int]]]]
    sibling: np.ndarray  # int64 [N]: clip id of the time-reversed sibling, -1 if none
    labels: dict[str, np.ndarray]  # task -> int64 [N]


def zero_shot_prompts() -> dict[str, list[str]]:
    """One prompt per class and task, in label-id order, using only caption words."""
    return {
        "direction": [f"a shape moves {d}" for d in DIRECTIONS],
        "shape": [f"a video with a {shape}" for shape in SHAPES],
        "color": [f"a video with a {color} shape" for color in COLORS],
    }


def labels_of(objects: list[tuple[str, str]], events: list[Event]) -> dict[str, int]:
    """Zero-shot labels of the first event's object: its direction (-1 unless it moves), shape
    and colour."""
    first = events[0]
    shape, color = objects[first.obj]
    return {
        "direction": DIRECTIONS.index(first.direction) if first.kind == "move" else -1,
        "shape": SHAPES.index(shape),
        "color": list(COLORS).index(color),
    }


# ---------------------------------------------------------------- geometry and rendering


def sprite_sizes(frame_size: int) -> tuple[int, int]:
    """Sprite half extent and the length of a move (pixels)."""
    return max(3, round(0.12 * frame_size)), round(0.3 * frame_size)


def sprite(shape: str, half: int) -> np.ndarray:
    """Boolean mask ``[2h+1, 2h+1]`` of a shape centred in its box."""
    y, x = np.mgrid[-half : half + 1, -half : half + 1]
    if shape == "circle":
        return x * x + y * y <= half * half + half // 2
    if shape == "square":
        return np.ones_like(x, dtype=bool)
    if shape == "triangle":
        return 2 * np.abs(x) <= y + half
    if shape == "diamond":
        return np.abs(x) + np.abs(y) <= half
    thick = max(1, half // 3)  # cross
    return (np.abs(x) <= thick) | (np.abs(y) <= thick)


def _window(event: int, num_events: int, num_frames: int) -> range:
    """Frames of event ``event``: the whole clip for one event, else its half."""
    if num_events == 1:
        return range(num_frames)
    half = num_frames // 2
    return range(event * half, (event + 1) * half)


def _track(
    event: Event, window: range, start: tuple[int, int], distance: int, num_frames: int
) -> list[tuple[int, int, int]]:
    """``(x, y, visible)`` per frame: static outside the window; a move spreads evenly over the
    window's frames, an appearance / disappearance switches halfway through it."""
    switch = window.start + len(window) // 2
    out = []
    for t in range(num_frames):
        x, y, visible = start[0], start[1], 1
        if event.kind == "move":
            dx, dy = STEP[event.direction]
            progress = min(max(t - window.start, 0), len(window) - 1) / (len(window) - 1)
            x, y = x + round(dx * distance * progress), y + round(dy * distance * progress)
        elif event.kind == "appear":
            visible = int(t >= switch)
        else:
            visible = int(t < switch)
        out.append((x, y, visible))
    return out


def tracks_apart(a: list[tuple[int, int, int]], b: list[tuple[int, int, int]], half: int) -> bool:
    """In every frame where both objects are visible, their boxes are separated by at least one
    pixel of background (no occlusion, so every object is fully visible)."""
    gap = 2 * half + 2
    return all(
        abs(xa - xb) >= gap or abs(ya - yb) >= gap
        for (xa, ya, va), (xb, yb, vb) in zip(a, b, strict=True)
        if va and vb
    )


def event_tracks(
    py: random.Random, events: list[Event], num_frames: int, size: int
) -> list[list[tuple[int, int, int]]]:
    """Start positions (rejection-sampled until paths are inside the frame and the objects
    never touch)."""
    half, distance = sprite_sizes(size)
    while True:
        tracks = []
        for k, event in enumerate(events):
            lo, hi = [half, half], [size - half - 1, size - half - 1]
            if event.kind == "move":  # leave room for the whole path
                dx, dy = STEP[event.direction]
                for axis, step in enumerate((dx, dy)):
                    lo[axis] += distance if step < 0 else 0
                    hi[axis] -= distance if step > 0 else 0
            start = (py.randint(lo[0], hi[0]), py.randint(lo[1], hi[1]))
            window = _window(k, len(events), num_frames)
            tracks.append(_track(event, window, start, distance, num_frames))
        if len(tracks) == 1 or tracks_apart(tracks[0], tracks[1], half):
            return tracks


def render(
    objects: list[tuple[str, str]], tracks: list[list[tuple[int, int, int]]], background: np.ndarray
) -> np.ndarray:
    """Frames ``uint8 [T, H, W, 3]``: the objects (solid colour) on a grey ``[H, W]`` background."""
    half, _ = sprite_sizes(background.shape[0])
    frames = np.repeat(background[None, :, :, None], len(tracks[0]), axis=0).repeat(3, axis=3)
    for (shape, color), track in zip(objects, tracks, strict=True):
        mask, rgb = sprite(shape, half), np.array(COLORS[color], np.uint8)
        for t, (x, y, visible) in enumerate(track):
            if visible:
                frames[t, y - half : y + half + 1, x - half : x + half + 1][mask] = rgb
    return frames


# ---------------------------------------------------------------- clips and captions


def random_objects(py: random.Random, n: int) -> list[tuple[str, str]]:
    """``n`` objects, distinct in both shape and colour (so either word names one object)."""
    return list(zip(py.sample(SHAPES, n), py.sample(list(COLORS), n), strict=True))


def _event(py: random.Random, obj: int) -> Event:
    kind = py.choices(("move", "appear", "disappear"), weights=(3, 1, 1))[0]
    return Event(obj, kind, py.choice(DIRECTIONS) if kind == "move" else None)


def _sibling_events(py: random.Random) -> list[Event]:
    """Two events whose time reversal swaps the objects' roles and keeps the words: a move and
    the opposite move, or an appearance and a disappearance (either order)."""
    if py.random() < 0.5:
        direction = py.choice(DIRECTIONS)
        return [Event(0, "move", direction), Event(1, "move", OPPOSITE[direction])]
    first = py.choice(("appear", "disappear"))
    second = "disappear" if first == "appear" else "appear"
    return [Event(0, first), Event(1, second)]


def reverse_events(events: list[Event]) -> list[Event]:
    """The events of the time-reversed clip: reversed order, moves opposite, appear <-> vanish."""
    flip = {"move": "move", "appear": "disappear", "disappear": "appear"}
    return [
        Event(e.obj, flip[e.kind], OPPOSITE[e.direction] if e.direction else None)
        for e in reversed(events)
    ]


def event_phrase(event: Event, objects: list[tuple[str, str]], choice: tuple[int, int, int]) -> str:
    article, verb, variant = choice
    shape, color = objects[event.obj]
    subject = f"{_ARTICLES[article]} {color} {shape}"
    if event.kind == "move":
        return f"{subject} {_MOVE_VERBS[verb]} {_DIRECTION_WORDS[event.direction][variant % 2]}"
    return f"{subject} {(_APPEAR if event.kind == 'appear' else _DISAPPEAR)[variant % 3]}"


def _caption(events: list[Event], objects: list[tuple[str, str]], py: random.Random) -> str:
    """One true caption; the number of random draws does not depend on the content, so the
    same seed makes the same choices for a clip and its reversed sibling."""
    prefix, connector = py.randrange(4), py.randrange(len(_CONNECTORS))
    choices = [(py.randrange(2), py.randrange(4), py.randrange(6)) for _ in range(2)]
    phrases = [event_phrase(e, objects, c) for e, c in zip(events, choices, strict=False)]
    body = phrases[0] if len(phrases) == 1 else _CONNECTORS[connector].format(*phrases)
    count = _COUNT_WORDS[len(objects) - 1]
    return ("", "a clip in which ", f"a video with {count}: ", "in this video ")[prefix] + body


def captions(events: list[Event], objects: list[tuple[str, str]], seed: int) -> list[str]:
    """Five distinct true captions; the same ``seed`` makes the same template choices."""
    py = random.Random(seed)
    out: list[str] = []
    for _ in range(500):
        text = _caption(events, objects, py)
        if text not in out:
            out.append(text)
            if len(out) == CAPTIONS_PER_CLIP:
                return out
    raise RuntimeError(f"could not find {CAPTIONS_PER_CLIP} distinct captions for {events}")


# ---------------------------------------------------------------- splits and cache


def generate_split(cfg: MovingShapesConfig, split: str) -> tuple[np.ndarray, dict]:
    """Frames ``uint8 [N, T, S, S, 3]`` and a JSON-able record of captions, objects, events,
    tracks, siblings and labels."""
    n_clips, size, n_frames = cfg.num(split), cfg.frame_size, cfg.num_frames
    noise_rng = np.random.default_rng([cfg.seed, SPLITS.index(split)])
    py = random.Random(int(noise_rng.integers(2**62)))
    pair_start = cfg.sibling_fraction / (2 - cfg.sibling_fraction)  # fraction f of the clips
    frames = np.empty((n_clips, n_frames, size, size, 3), np.uint8)
    record: dict[str, list] = {k: [] for k in ("captions", "objects", "events", "tracks")}
    sibling: list[int] = []

    def add(objects: list, events: list[Event], tracks: list, clip: np.ndarray, seed: int) -> None:
        frames[len(sibling)] = clip
        record["captions"].append(captions(events, objects, seed))
        record["objects"].append(objects)
        record["events"].append([asdict(e) for e in events])
        record["tracks"].append(tracks)

    while len(sibling) < n_clips:
        level = py.randint(25, 85)
        background = noise_rng.integers(level - 8, level + 9, (size, size), dtype=np.uint8)
        template_seed, i = py.getrandbits(62), len(sibling)
        if n_clips - i >= 2 and py.random() < pair_start:
            objects, events = random_objects(py, 2), _sibling_events(py)
            tracks = event_tracks(py, events, n_frames, size)
            clip = render(objects, tracks, background)
            add(objects, events, tracks, clip, template_seed)
            sibling.append(i + 1)
            reversed_tracks = [track[::-1] for track in tracks]
            add(objects, reverse_events(events), reversed_tracks, clip[::-1], template_seed)
            sibling.append(i)
        else:
            n = py.choices((1, 2), weights=(1, 2))[0]
            objects, events = random_objects(py, n), [_event(py, k) for k in range(n)]
            tracks = event_tracks(py, events, n_frames, size)
            add(objects, events, tracks, render(objects, tracks, background), template_seed)
            sibling.append(-1)
    labels = [
        labels_of(objs, [Event(**e) for e in evs])
        for objs, evs in zip(record["objects"], record["events"], strict=True)
    ]
    record["sibling"] = sibling
    record["labels"] = {task: [lab[task] for lab in labels] for task in TASKS}
    return frames, record


def moving_shapes_dir(cfg: MovingShapesConfig, cache_root: Path) -> Path:
    return Path(cache_root) / "data" / f"moving_shapes-{cfg.key()}"


def ensure_moving_shapes(cfg: MovingShapesConfig, cache_root: Path) -> Path:
    """The cache directory of ``cfg``, generated first if absent (atomically: see
    :func:`datamodules.embedded.cache.write_once`)."""
    return write_once(moving_shapes_dir(cfg, cache_root), partial(_write_moving_shapes, cfg))


def _write_moving_shapes(cfg: MovingShapesConfig, directory: Path) -> None:
    """Every split and a ``meta.json`` into ``directory``."""
    for split in SPLITS:
        frames, record = generate_split(cfg, split)
        np.save(directory / f"{split}_frames.npy", frames)
        (directory / f"{split}.json").write_text(json.dumps(record))
    meta = {"config": asdict(cfg), "version": GENERATOR_VERSION, "prompts": zero_shot_prompts()}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))


def load_split(directory: Path, split: str) -> MovingShapesSplit:
    """Read one split from a directory written by :func:`ensure_moving_shapes`."""
    record = json.loads((Path(directory) / f"{split}.json").read_text())
    return MovingShapesSplit(
        frames=np.load(Path(directory) / f"{split}_frames.npy", mmap_mode="r"),
        captions=record["captions"],
        objects=[[tuple(o) for o in objs] for objs in record["objects"]],
        events=[[Event(**e) for e in evs] for evs in record["events"]],
        tracks=[[[tuple(p) for p in track] for track in tracks] for tracks in record["tracks"]],
        sibling=np.asarray(record["sibling"], dtype=np.int64),
        labels={t: np.asarray(v, dtype=np.int64) for t, v in record["labels"].items()},
    )
