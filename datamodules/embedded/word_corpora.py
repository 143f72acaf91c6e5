"""Two built-in text corpora for word-embedding alignment (Si-En alignment, methods/part2.md
Sec. 56) and cross-corpus semantic shift (CADE, Sec. 51), made from the shapes captions.

Each corpus is one caption per line, written by the built-in caption generator
(:func:`datamodules.embedded.shapes.captions`, the same templates, synonyms and relations as
``image_text``) for scenes drawn from a *world*: a seeded distribution over scenes in which
every word has its own distributional signature (without it all colour words would be
exchangeable and no embedding could tell them apart). The world draws each object's shape from
non-uniform frequencies and, given the shape, its colour, size, row and column from
``Dirichlet(affinity)`` tables (smaller ``affinity``: more distinctive contexts).

- **languages** (Si-En alignment): corpus A is captions in language 0 (English-like); corpus B
  is captions of *other* scenes (comparable, not parallel corpora) translated into synthetic
  language 1 (:class:`datamodules.languages.SyntheticLanguages`: ``red`` -> ``redq1``). B's
  world is A's with every table mixed with a fresh one (``drift``), so the two spaces are only
  approximately isomorphic, as real languages are. The gold bilingual dictionary is the
  lexicon (``w`` <-> ``wq1`` for every word of both vocabularies), split into ``train.dict`` and
  ``test.dict`` (MUSE format, one ``source target`` pair per line; random split,
  ``test_fraction``; MUSE splits by frequency rank, which a vocabulary of ~60 words cannot).
- **periods** (CADE): both corpora in language 0 from the same world, but in period B
  ``num_shifted`` colour and shape words change meaning: they are swapped in pairs (in period B
  a red object is called ``blue`` and a blue one ``red``; with ``shift_fraction`` < 1 only that
  share of their uses, so the word gains a sense and keeps the old one), so their contexts change
  while every other word keeps its meaning. ``shifted.txt`` is the gold list (one word per line);
  ``train.dict`` pairs every shared word with itself (the anchors of the Procrustes baseline,
  Hamilton et al. 2016).

Files (``<cache>/data/word_corpora-<hash>``): ``corpus_a.txt``, ``corpus_b.txt`` (one sentence a
line, :func:`~datamodules.formats.text_lines.read_text_lines`), ``train.dict``, ``test.dict``
(languages), ``shifted.txt`` (periods): the layout the ``files`` format reads from ``data.root``.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.embedded.cache import config_key, write_once
from datamodules.embedded.shapes import COLORS, SHAPES, SIZES, Obj, captions
from datamodules.languages import SyntheticLanguages
from modules.words import split_words

GENERATOR_VERSION = 1
MODES = ("languages", "periods")
#: Words the ``periods`` mode may shift (swapped in pairs within a kind).
SHIFTABLE = {"color": tuple(COLORS), "shape": SHAPES}


@dataclass(frozen=True)
class WordCorporaConfig:
    """Generator parameters; their hash names the cache directory."""

    mode: str = "languages"
    num_sentences: int = 4000  # per corpus
    affinity: float = 0.3
    drift: float = 0.2
    test_fraction: float = 0.3
    num_shifted: int = 4
    shift_fraction: float = 1.0  # periods: the share of a shifted word's uses in B that swap
    min_count: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.num_sentences < 10:
            raise ValueError(f"num_sentences must be at least 10, got {self.num_sentences}")
        if self.affinity <= 0:
            raise ValueError(f"affinity must be positive, got {self.affinity}")
        if not 0.0 <= self.drift <= 1.0:
            raise ValueError(f"drift must be in [0, 1], got {self.drift}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        most = 2 * min(len(v) // 2 for v in SHIFTABLE.values()) * len(SHIFTABLE)
        if self.num_shifted % 2 or not 2 <= self.num_shifted <= most:
            raise ValueError(f"num_shifted must be even, in [2, {most}], got {self.num_shifted}")
        if not 0.0 < self.shift_fraction <= 1.0:
            raise ValueError(f"shift_fraction must be in (0, 1], got {self.shift_fraction}")
        if self.min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {self.min_count}")

    def key(self) -> str:
        return config_key(self, GENERATOR_VERSION)


@dataclass(frozen=True)
class World:
    """A distribution over scenes: shape frequencies and, per shape, tables of colour, size,
    row and column probabilities."""

    shape: np.ndarray  # [S]
    color: np.ndarray  # [S, C]
    size: np.ndarray  # [S, 2]
    row: np.ndarray  # [S, 3]
    col: np.ndarray  # [S, 3]

    @classmethod
    def draw(cls, rng: np.random.Generator, affinity: float) -> World:
        s = len(SHAPES)
        return cls(
            shape=rng.dirichlet(np.ones(s)),
            color=rng.dirichlet(np.full(len(COLORS), affinity), size=s),
            size=rng.dirichlet(np.full(len(SIZES), affinity), size=s),
            row=rng.dirichlet(np.full(3, affinity), size=s),
            col=rng.dirichlet(np.full(3, affinity), size=s),
        )

    def mixed(self, other: World, weight: float) -> World:
        """``(1 - weight) * self + weight * other``, table by table."""
        return World(
            *(
                (1 - weight) * getattr(self, f) + weight * getattr(other, f)
                for f in ("shape", "color", "size", "row", "col")
            )
        )

    def scene(self, rng: np.random.Generator) -> list[Obj]:
        """1-3 objects in distinct cells; the first object's cell follows its shape's tables,
        the others take the nearest free cell to theirs."""
        objects: list[Obj] = []
        free = set(range(9))
        for _ in range(int(rng.integers(1, 4))):
            s = int(rng.choice(len(SHAPES), p=self.shape))
            row, col = int(rng.choice(3, p=self.row[s])), int(rng.choice(3, p=self.col[s]))
            cell = min(free, key=lambda c: abs(c // 3 - row) + abs(c % 3 - col) + c / 100)
            free.discard(cell)
            color = list(COLORS)[int(rng.choice(len(COLORS), p=self.color[s]))]
            size = SIZES[int(rng.choice(len(SIZES), p=self.size[s]))]
            objects.append(Obj(SHAPES[s], color, size, cell // 3, cell % 3, 0, 0))
        if len(objects) > 1:  # the captions describe several objects with a large first one
            objects = [
                Obj(o.shape, o.color, "large" if i == 0 else "small", o.row, o.col, 0, 0)
                for i, o in enumerate(objects)
            ]
        return objects


def sentences(world: World, count: int, rng: np.random.Generator) -> list[str]:
    """``count`` captions (one drawn per scene, words joined by single spaces)."""
    out = []
    for _ in range(count):
        scene = world.scene(rng)
        text = captions(scene, int(rng.integers(2**31)))[int(rng.integers(5))]
        out.append(" ".join(split_words(text)))
    return out


def shifted_pairs(cfg: WordCorporaConfig, rng: np.random.Generator) -> list[tuple[str, str]]:
    """The swapped word pairs of ``periods``: ``num_shifted / 2`` pairs, alternating colour and
    shape pairs, drawn without repetition."""
    pools = {kind: list(rng.permutation(words)) for kind, words in SHIFTABLE.items()}
    pairs, kinds = [], list(SHIFTABLE)
    for i in range(cfg.num_shifted // 2):
        pool = pools[kinds[i % len(kinds)]]
        pairs.append((str(pool.pop()), str(pool.pop())))
    return pairs


def _renamed(text: str, mapping: dict[str, str], fraction: float, rng: np.random.Generator) -> str:
    """``text`` with each word of ``mapping`` renamed with probability ``fraction``."""
    return " ".join(
        mapping[w] if w in mapping and rng.random() < fraction else w for w in text.split()
    )


def vocabulary(corpus: list[str], min_count: int) -> list[str]:
    """Words with at least ``min_count`` occurrences, most frequent first (ties by spelling)."""
    counts = Counter(w for line in corpus for w in line.split())
    return sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))


@dataclass(frozen=True)
class WordCorpora:
    """What the generator writes (and the ``files`` format reads)."""

    corpus_a: list[str]
    corpus_b: list[str]
    train_pairs: list[tuple[str, str]]
    test_pairs: list[tuple[str, str]]
    shifted: list[str]


def generate(cfg: WordCorporaConfig) -> WordCorpora:
    """The two corpora and their gold data, deterministic from ``cfg``."""
    rng = np.random.default_rng([cfg.seed, MODES.index(cfg.mode)])
    world = World.draw(rng, cfg.affinity)
    if cfg.mode == "languages":
        world_b = world.mixed(World.draw(rng, cfg.affinity), cfg.drift)
        corpus_a = sentences(world, cfg.num_sentences, rng)
        language = SyntheticLanguages(2)
        corpus_b = [language.translate(t, 1) for t in sentences(world_b, cfg.num_sentences, rng)]
        words_b = set(vocabulary(corpus_b, cfg.min_count))
        lexicon = [
            (w, language.word(w, 1))
            for w in vocabulary(corpus_a, cfg.min_count)
            if w.isalnum() and language.word(w, 1) in words_b
        ]
        order = random.Random(cfg.seed).sample(range(len(lexicon)), len(lexicon))
        n_test = max(1, round(cfg.test_fraction * len(lexicon)))
        test = sorted(lexicon[i] for i in order[:n_test])
        train = sorted(lexicon[i] for i in order[n_test:])
        return WordCorpora(corpus_a, corpus_b, train, test, [])
    pairs = shifted_pairs(cfg, rng)
    swap = {a: b for a, b in pairs} | {b: a for a, b in pairs}
    corpus_a = sentences(world, cfg.num_sentences, rng)
    corpus_b = [
        _renamed(t, swap, cfg.shift_fraction, rng) for t in sentences(world, cfg.num_sentences, rng)
    ]
    common = set(vocabulary(corpus_a, cfg.min_count)) & set(vocabulary(corpus_b, cfg.min_count))
    anchors = sorted((w, w) for w in common)
    return WordCorpora(corpus_a, corpus_b, anchors, [], sorted(w for w in swap if w in common))


def write_corpora(data: WordCorpora, directory: Path) -> None:
    """The files of :class:`WordCorpora` in ``directory`` (the ``files`` format's layout)."""
    (directory / "corpus_a.txt").write_text("\n".join(data.corpus_a) + "\n")
    (directory / "corpus_b.txt").write_text("\n".join(data.corpus_b) + "\n")
    (directory / "train.dict").write_text("".join(f"{a} {b}\n" for a, b in data.train_pairs))
    if data.test_pairs:
        (directory / "test.dict").write_text("".join(f"{a} {b}\n" for a, b in data.test_pairs))
    if data.shifted:
        (directory / "shifted.txt").write_text("".join(f"{w}\n" for w in data.shifted))


def ensure_word_corpora(cfg: WordCorporaConfig, cache_root: Path) -> Path:
    """The generated files' directory, written once."""
    target = cache_root / "data" / f"word_corpora-{cfg.key()}"
    return write_once(target, lambda d: write_corpora(generate(cfg), d))
