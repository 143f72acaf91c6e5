"""Built-in long documents made of topic segments, for topic segmentation (TSSP + CSSL).

A *topic* is a (subject, place) pair: 8 subjects x 8 places = 64 topics, each word with two
synonyms. A document is a chain of 3-6 segments, each a run of 2-7 sentences about one topic;
the gold boundary is the last sentence of each segment. Built so that coherence matters and a
bag-of-words boundary detector is not enough:

- consecutive topics of a document share one factor with probability ``share_prob`` (the same
  subject in a new place, or a new subject in the same place), so sentences on both sides of a
  boundary often share their content word;
- each sentence names only its subject (``p_subject``), only its place (``p_place``) or both,
  in a synonym, and fills the rest with verbs and objects drawn from pools every topic shares:
  two adjacent sentences of one segment often share no content word at all.

A boundary is where the (subject, place) pair changes, which a reader sees by pooling the
evidence of several sentences on each side (the document-level model), not by comparing two
neighbours. Deterministic from the config, written once as JSON lines
(``{split}.jsonl``: one document per line, ``{"segments": [[sentence, ...], ...]}``).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from datamodules.embedded.cache import config_key, write_once

GENERATOR_VERSION = 1
SUBJECTS = (
    ("cat", "kitten"),
    ("dog", "puppy"),
    ("farmer", "grower"),
    ("child", "kid"),
    ("robot", "machine"),
    ("bird", "sparrow"),
    ("painter", "artist"),
    ("doctor", "physician"),
)
PLACES = (
    ("kitchen", "cookhouse"),
    ("garden", "yard"),
    ("harbor", "port"),
    ("forest", "woods"),
    ("station", "depot"),
    ("library", "archive"),
    ("market", "bazaar"),
    ("hospital", "clinic"),
)
VERBS = ("watches", "carries", "finds", "moves", "cleans", "paints", "holds", "drops")
OBJECTS = ("box", "lamp", "book", "ball", "cup", "rope", "key", "hat")
_SUBJECT_ONLY = (
    "the {s} {v} the {o}",
    "then the {s} {v} a {o} again",
    "later the {s} quietly {v} the {o}",
)
_PLACE_ONLY = ("a {o} lies in the {p}", "there is a {o} near the {p}", "the {p} keeps a {o}")
_BOTH = ("in the {p} the {s} {v} the {o}", "the {s} {v} a {o} in the {p}")

Document = list[list[str]]  # segments, each a list of sentences


@dataclass(frozen=True)
class SegmentedDocumentsConfig:
    """Documents per split, segments per document, sentences per segment (inclusive ranges),
    the chance that consecutive topics share a factor, and how each sentence names its topic
    (subject only, place only; both otherwise)."""

    num_train: int = 800
    num_val: int = 100
    num_test: int = 200
    min_segments: int = 3
    max_segments: int = 6
    min_sentences: int = 2
    max_sentences: int = 7
    share_prob: float = 0.8
    p_subject: float = 0.45
    p_place: float = 0.35
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.min_segments <= self.max_segments:
            raise ValueError("min_segments must be >= 2 and <= max_segments")
        if not 1 <= self.min_sentences <= self.max_sentences:
            raise ValueError("min_sentences must be >= 1 and <= max_sentences")
        if not 0.0 <= self.share_prob <= 1.0:
            raise ValueError(f"share_prob must be in [0, 1], got {self.share_prob}")
        if self.p_subject < 0 or self.p_place < 0 or self.p_subject + self.p_place > 1:
            raise ValueError("p_subject and p_place must be >= 0 and sum to at most 1")
        if min(self.num_train, self.num_val, self.num_test) < 1:
            raise ValueError("num_train, num_val and num_test must be at least 1")

    def num(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]

    def key(self) -> str:
        return config_key(self, GENERATOR_VERSION)


def sentence(topic: tuple[int, int], py: random.Random, cfg: SegmentedDocumentsConfig) -> str:
    """One sentence about ``topic`` (subject id, place id)."""
    words = {
        "s": py.choice(SUBJECTS[topic[0]]),
        "p": py.choice(PLACES[topic[1]]),
        "v": py.choice(VERBS),
        "o": py.choice(OBJECTS),
    }
    draw = py.random()
    if draw < cfg.p_subject:
        templates = _SUBJECT_ONLY
    elif draw < cfg.p_subject + cfg.p_place:
        templates = _PLACE_ONLY
    else:
        templates = _BOTH
    return py.choice(templates).format(**words)


def next_topic(
    topic: tuple[int, int], py: random.Random, cfg: SegmentedDocumentsConfig
) -> tuple[int, int]:
    """A topic different from ``topic``: one factor changed (``share_prob``), else both."""
    subject, place = topic
    other_subject = py.choice([s for s in range(len(SUBJECTS)) if s != subject])
    other_place = py.choice([p for p in range(len(PLACES)) if p != place])
    if py.random() < cfg.share_prob:
        return (other_subject, place) if py.random() < 0.5 else (subject, other_place)
    return other_subject, other_place


def document(py: random.Random, cfg: SegmentedDocumentsConfig) -> Document:
    """One document: a chain of topics, each a run of sentences."""
    topic = (py.randrange(len(SUBJECTS)), py.randrange(len(PLACES)))
    segments = []
    for k in range(py.randint(cfg.min_segments, cfg.max_segments)):
        if k:
            topic = next_topic(topic, py, cfg)
        length = py.randint(cfg.min_sentences, cfg.max_sentences)
        segments.append([sentence(topic, py, cfg) for _ in range(length)])
    return segments


def generate_split(cfg: SegmentedDocumentsConfig, split: str) -> list[Document]:
    """The documents of ``split`` (a stream of its own per split)."""
    py = random.Random(f"{cfg.seed}-{split}")
    return [document(py, cfg) for _ in range(cfg.num(split))]


def ensure_segmented_documents(cfg: SegmentedDocumentsConfig, cache_root: Path) -> Path:
    """The generated documents' directory (written once)."""

    def write(directory: Path) -> None:
        for split in ("train", "val", "test"):
            lines = [json.dumps({"segments": doc}) for doc in generate_split(cfg, split)]
            (directory / f"{split}.jsonl").write_text("\n".join(lines) + "\n")

    return write_once(cache_root / f"segmented_documents-{cfg.key()}", write)


def load_split(directory: Path, split: str) -> list[Document]:
    """The documents of ``split`` as written by :func:`ensure_segmented_documents`."""
    lines = (directory / f"{split}.jsonl").read_text().splitlines()
    return [json.loads(line)["segments"] for line in lines if line]
