"""Built-in image-text data: rendered scenes of coloured shapes, five true captions each.

A scene holds 1-3 objects (6 shapes, 6 colours, 2 sizes) placed in distinct cells of a 3x3
grid on a noisy grey background. With several objects the first one ("main object") is large
and the others small, so the main object is visible in the pixels. Captions are paraphrases:
different templates, word orders and synonyms, all true for the image. Single objects are
described with their position ("in the top left corner"), several objects with their spatial
relations ("to the left of", "above").

Hard negatives: a fraction of the images are sibling pairs of two-object scenes on the same
background, with either the two colours swapped or the two positions swapped. Sibling captions
use the same template choices (with the mention order flipped for a relation swap), so each
caption of one sibling has exactly the bag of words of the matching caption of the other.

Everything is deterministic from :class:`ShapesConfig`; :func:`ensure_shapes` writes the
splits once into ``<cache_root>/data/shapes-<hash>`` (atomic rename) and later calls reuse it.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from datamodules.embedded.cache import config_key, write_once

GENERATOR_VERSION = 1
SPLITS = ("train", "val", "test")
CAPTIONS_PER_IMAGE = 5
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 70, 230),
    "yellow": (235, 215, 30),
    "purple": (140, 50, 200),
    "pink": (250, 120, 190),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star")
SIZES = ("small", "large")
COUNT_WORDS = ("one", "two", "three")
TASKS = ("shape", "color", "count")

_SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big", "large")}
_RELATIONS = {
    "left": ("left of", "to the left of", "on the left of"),
    "right": ("right of", "to the right of", "on the right of"),
    "above": ("above", "over", "higher than"),
    "below": ("below", "under", "lower than"),
}
_ROWS, _COLS = ("top", "middle", "bottom"), ("left", "centre", "right")
_VERBS = ("", "is ", "sits ", "appears ")
_JOINERS = (", and ", "; ", ", while ")


@dataclass(frozen=True)
class ShapesConfig:
    """Generator parameters; their hash names the cache directory."""

    num_train: int = 10000
    num_val: int = 1000
    num_test: int = 1000
    image_size: int = 64
    hard_negative_fraction: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.num_train, self.num_val, self.num_test) < 1:
            raise ValueError("num_train, num_val and num_test must be at least 1")
        if self.image_size < 24:
            raise ValueError(f"image_size must be at least 24, got {self.image_size}")
        if not 0.0 <= self.hard_negative_fraction <= 1 / 3:
            # Pairs are two-object scenes; above 1/3 the object counts could not stay balanced.
            raise ValueError("hard_negative_fraction must be in [0, 1/3]")

    def num(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]

    def key(self) -> str:
        """Short hash of the parameters and the generator version."""
        return config_key(self, GENERATOR_VERSION)


@dataclass(frozen=True)
class Obj:
    """One rendered object: attributes, grid cell and pixel centre."""

    shape: str
    color: str
    size: str
    row: int
    col: int
    x: int
    y: int


@dataclass(frozen=True)
class ShapesSplit:
    """One split as read from the cache; ``images`` is memory-mapped ``uint8 [N, H, W, 3]``."""

    images: np.ndarray
    captions: list[list[str]]
    objects: list[list[Obj]]
    sibling: np.ndarray  # int64 [N]: image id of the hard-negative sibling, -1 if none
    sibling_kind: list[str]  # "color", "relation" or ""
    labels: dict[str, np.ndarray]  # task -> int64 [N]


def zero_shot_prompts() -> dict[str, list[str]]:
    """One prompt per class and task, in label-id order, using only caption words."""
    return {
        "shape": [f"a picture of a {shape}" for shape in SHAPES],
        "color": [f"a picture of a {color} shape" for color in COLORS],
        "count": ["a picture of one shape", "a picture of two shapes", "a picture of three shapes"],
    }


def labels_of(objects: list[Obj]) -> dict[str, int]:
    """Zero-shot labels: shape and colour of the main object, number of objects minus one."""
    main = objects[0]
    return {
        "shape": SHAPES.index(main.shape),
        "color": list(COLORS).index(main.color),
        "count": len(objects) - 1,
    }


# ---------------------------------------------------------------- scenes and rendering


def _geometry(image_size: int) -> tuple[float, dict[str, int], int]:
    """Grid cell width, half extent per size, and position jitter (pixels)."""
    cell = image_size / 3
    return cell, {"large": round(0.36 * cell), "small": round(0.2 * cell)}, round(0.08 * cell)


def _place(py: random.Random, cells: list[int], image_size: int) -> list[tuple[int, int, int, int]]:
    cell, _, jitter = _geometry(image_size)
    out = []
    for c in cells:
        row, col = divmod(c, 3)
        x = int((col + 0.5) * cell) + py.randint(-jitter, jitter)
        y = int((row + 0.5) * cell) + py.randint(-jitter, jitter)
        out.append((row, col, x, y))
    return out


def _sample_scene(py: random.Random, n: int, image_size: int, pair: bool) -> list[Obj]:
    """``n`` objects with distinct (shape, colour); for a pair, the first two differ in both."""
    colors = list(COLORS)
    while True:
        attrs = [(py.choice(SHAPES), py.choice(colors)) for _ in range(n)]
        distinct = len(set(attrs)) == n
        if pair:
            distinct &= attrs[0][0] != attrs[1][0] and attrs[0][1] != attrs[1][1]
        if distinct:
            break
    sizes = [py.choice(SIZES)] if n == 1 else ["large"] + ["small"] * (n - 1)
    places = _place(py, py.sample(range(9), n), image_size)
    return [Obj(s, c, z, *p) for (s, c), z, p in zip(attrs, sizes, places, strict=True)]


def _swap(objects: list[Obj], kind: str) -> list[Obj]:
    """The hard-negative sibling: colours or positions of the first two objects exchanged."""
    a, b = objects[:2]
    if kind == "color":
        return [replace(a, color=b.color), replace(b, color=a.color), *objects[2:]]
    a_at, b_at = ({k: getattr(o, k) for k in ("row", "col", "x", "y")} for o in (a, b))
    return [replace(a, **b_at), replace(b, **a_at), *objects[2:]]


def _polygon(shape: str, x: int, y: int, h: int) -> list[tuple[float, float]]:
    if shape == "triangle":
        return [(x, y - h), (x + h, y + h), (x - h, y + h)]
    if shape == "diamond":
        return [(x, y - h), (x + h, y), (x, y + h), (x - h, y)]
    # star: ten vertices alternating between the outer and the inner radius
    radii = [h if k % 2 == 0 else 0.45 * h for k in range(10)]
    return [
        (x + r * math.sin(k * math.pi / 5), y - r * math.cos(k * math.pi / 5))
        for k, r in enumerate(radii)
    ]


def draw_object(draw: ImageDraw.ImageDraw, o: Obj, h: int, fill: Any) -> None:
    """Draw one object of half extent ``h`` px, solid ``fill`` (no anti-aliasing)."""
    if o.shape == "circle":
        draw.ellipse((o.x - h, o.y - h, o.x + h, o.y + h), fill=fill)
    elif o.shape == "square":
        draw.rectangle((o.x - h + 1, o.y - h + 1, o.x + h - 1, o.y + h - 1), fill=fill)
    elif o.shape == "cross":
        t = max(1, round(h / 3))
        draw.rectangle((o.x - t, o.y - h, o.x + t, o.y + h), fill=fill)
        draw.rectangle((o.x - h, o.y - t, o.x + h, o.y + t), fill=fill)
    else:
        draw.polygon(_polygon(o.shape, o.x, o.y, h), fill=fill)


def half_extent(o: Obj, image_size: int) -> int:
    """Half the side of ``o``'s bounding box, in pixels, in a ``image_size`` image."""
    return _geometry(image_size)[1][o.size]


def render(objects: list[Obj], background: np.ndarray) -> np.ndarray:
    """Draw the objects (solid, no anti-aliasing) on a grey ``[H, W]`` uint8 background."""
    image = Image.fromarray(background).convert("RGB")
    draw = ImageDraw.Draw(image)
    for o in objects:
        draw_object(draw, o, half_extent(o, background.shape[0]), COLORS[o.color])
    return np.asarray(image)


# ---------------------------------------------------------------- captions


def _position(o: Obj, variant: int) -> str:
    row, col = _ROWS[o.row], _COLS[o.col]
    if o.row == 1 and o.col == 1:
        return ("in the centre", "in the middle")[variant]
    if o.col == 1:
        return (f"at the {row}", f"near the {row}")[variant]
    if o.row == 1:
        return (f"on the {col}", f"at the {col} side")[variant]
    return (f"in the {row} {col} corner", f"at the {row} {col}")[variant]


def _relation(subject: Obj, other: Obj, vertical: bool, variant: int) -> str:
    """A true relation phrase "subject <phrase> other"; ``vertical`` picks the axis when both
    axes separate the two cells."""
    if subject.col == other.col or (vertical and subject.row != other.row):
        direction = "above" if subject.row < other.row else "below"
    else:
        direction = "left" if subject.col < other.col else "right"
    return _RELATIONS[direction][variant]


def _single_caption(o: Obj, py: random.Random) -> str:
    form, sized, size_variant, pos_variant = (
        py.randrange(8),
        py.random() < 0.5,
        py.randrange(3),
        py.randrange(2),
    )
    size = f"{_SIZE_WORDS[o.size][size_variant]} " if sized else ""
    phrase, pos = f"a {size}{o.color} {o.shape}", _position(o, pos_variant)
    return (
        f"{phrase} {pos}",
        f"there is {phrase} {pos}",
        f"one shape: {phrase} {pos}",
        f"a picture of {phrase} {pos}",
        f"{pos} there is {phrase}",
        f"a single {size}{o.color} {o.shape} {pos}",
        f"a {size}{o.shape} coloured {o.color}, {pos}",
        f"a picture of one shape, {phrase}",
    )[form]


def _multi_caption(objects: list[Obj], py: random.Random, flip: bool) -> str:
    """All colours and shapes, the relation of the first two objects and, with three, of the
    third to one of them. ``flip`` reverses which of the first two is mentioned first."""
    prefix, verb = py.randrange(6), _VERBS[py.randrange(4)]
    sized, size_variant = py.random() < 0.5, py.randrange(3)
    first_main = (py.random() < 0.5) != flip
    vertical, rel_variant = py.random() < 0.5, py.randrange(3)

    def phrase(o: Obj) -> str:
        size = f"{_SIZE_WORDS[o.size][size_variant]} " if sized else ""
        return f"a {size}{o.color} {o.shape}"

    a, b = objects[:2] if first_main else objects[1::-1]
    text = f"{phrase(a)} {verb}{_relation(a, b, vertical, rel_variant)} {phrase(b)}"
    if len(objects) == 3:
        c, ref = objects[2], objects[py.randrange(2)]
        joiner, verb2 = _JOINERS[py.randrange(3)], _VERBS[py.randrange(4)]
        vertical2, rel_variant2 = py.random() < 0.5, py.randrange(3)
        relation = _relation(c, ref, vertical2, rel_variant2)
        text += f"{joiner}{phrase(c)} {verb2}{relation} the {ref.color} {ref.shape}"
    count = COUNT_WORDS[len(objects) - 1]
    return (
        "",
        f"{count} shapes: ",
        f"a picture of {count} shapes: ",
        f"{count} objects: ",
        f"an image with {count} shapes, where ",
        f"there are {count} shapes, ",
    )[prefix] + text


def captions(objects: list[Obj], seed: int, flip: bool = False) -> list[str]:
    """Five distinct true captions; the same ``seed`` makes the same template choices."""
    py = random.Random(seed)
    out: list[str] = []
    for _ in range(500):
        if len(objects) == 1:
            text = _single_caption(objects[0], py)
        else:
            text = _multi_caption(objects, py, flip)
        if text not in out:
            out.append(text)
            if len(out) == CAPTIONS_PER_IMAGE:
                return out
    raise RuntimeError(f"could not find {CAPTIONS_PER_IMAGE} distinct captions for {objects}")


# ---------------------------------------------------------------- splits and cache


def generate_split(cfg: ShapesConfig, split: str) -> tuple[np.ndarray, dict]:
    """Images ``uint8 [N, S, S, 3]`` and a JSON-able record of captions, objects, labels."""
    n_images, size, f = cfg.num(split), cfg.image_size, cfg.hard_negative_fraction
    noise_rng = np.random.default_rng([cfg.seed, SPLITS.index(split)])
    py = random.Random(int(noise_rng.integers(2**62)))
    pair_start = f / (2 - f)  # a unit is a pair with this probability: fraction f of images
    # object counts of single scenes, chosen so that all counts are equally frequent overall
    single_counts = [1 / 3, 1 / 3 - f, 1 / 3]  # (normalised by random.choices)
    images = np.empty((n_images, size, size, 3), np.uint8)
    scenes: list[list[Obj]] = []
    texts: list[list[str]] = []
    sibling: list[int] = []
    kinds: list[str] = []
    while len(scenes) < n_images:
        level = py.randint(25, 85)
        background = noise_rng.integers(level - 8, level + 9, (size, size), dtype=np.uint8)
        template_seed = py.getrandbits(62)
        i = len(scenes)
        if n_images - i >= 2 and py.random() < pair_start:
            kind = py.choice(("color", "relation"))
            first = _sample_scene(py, 2, size, pair=True)
            second = _swap(first, kind)
            for objs, flip in ((first, False), (second, kind == "relation")):
                images[len(scenes)] = render(objs, background)
                scenes.append(objs)
                texts.append(captions(objs, template_seed, flip))
            sibling += [i + 1, i]
            kinds += [kind, kind]
        else:
            n = py.choices((1, 2, 3), weights=single_counts)[0]
            objs = _sample_scene(py, n, size, pair=False)
            images[i] = render(objs, background)
            scenes.append(objs)
            texts.append(captions(objs, template_seed))
            sibling.append(-1)
            kinds.append("")
    labels = [labels_of(objs) for objs in scenes]
    record = {
        "captions": texts,
        "objects": [[vars(o) for o in objs] for objs in scenes],
        "sibling": sibling,
        "sibling_kind": kinds,
        "labels": {task: [lab[task] for lab in labels] for task in TASKS},
    }
    return images, record


def shapes_dir(cfg: ShapesConfig, cache_root: Path) -> Path:
    return Path(cache_root) / "data" / f"shapes-{cfg.key()}"


def ensure_shapes(cfg: ShapesConfig, cache_root: Path) -> Path:
    """The cache directory of ``cfg``, generated first if absent (atomically: see
    :func:`datamodules.embedded.cache.write_once`)."""
    return write_once(shapes_dir(cfg, cache_root), partial(_write_shapes, cfg))


def _write_shapes(cfg: ShapesConfig, directory: Path) -> None:
    """Every split and a ``meta.json`` into ``directory``."""
    for split in SPLITS:
        images, record = generate_split(cfg, split)
        np.save(directory / f"{split}_images.npy", images)
        (directory / f"{split}.json").write_text(json.dumps(record))
    meta = {"config": asdict(cfg), "version": GENERATOR_VERSION, "prompts": zero_shot_prompts()}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))


def load_split(directory: Path, split: str) -> ShapesSplit:
    """Read one split from a directory written by :func:`ensure_shapes`."""
    record = json.loads((Path(directory) / f"{split}.json").read_text())
    return ShapesSplit(
        images=np.load(Path(directory) / f"{split}_images.npy", mmap_mode="r"),
        captions=record["captions"],
        objects=[[Obj(**o) for o in objs] for objs in record["objects"]],
        sibling=np.asarray(record["sibling"], dtype=np.int64),
        sibling_kind=record["sibling_kind"],
        labels={t: np.asarray(v, dtype=np.int64) for t, v in record["labels"].items()},
    )
