"""The built-in sentences: a small generated English whose meaning is known exactly.

A meaning is six factors: a ``domain`` (kitchen, sports, science, travel) and, from that
domain's vocabulary, a ``subject``, ``verb`` and ``object``, plus an ``attribute`` of the object
and a ``place`` shared by all domains. Every factor value has two or three synonyms, and a
sentence is one of five templates (active, fronted place, passive, relative clause, "it was")
with optional filler words, so two sentences with the same meaning often share few words and
two with different meanings can share many ("the chef chopped the fresh onion" / "the chef
washed the fresh onion"). This is the structure sentence-embedding methods are judged on: the
gold similarity of a pair is the number of factors their meanings share.

What a split holds (``SentencesConfig``; deterministic from ``seed``, cached):

- ``train.jsonl``: ``num_train`` meanings drawn at random, each as a ``sentence``, a second
  realisation ``paraphrase`` (same meaning, drawn afresh: co-cited-like positives), an
  ``entailment`` (the same meaning with the attribute or the place left out) and a
  ``contradiction`` (the premise's template and synonyms with the verb or the object changed:
  high word overlap, another meaning), with ``meaning`` (an id) and ``domain``;
- ``val.jsonl`` / ``test.jsonl``: STS pairs, the second meaning sharing 0-5 of the five
  content factors with the first (uniformly, within the first's domain), realised
  independently: ``sentence1``, ``sentence2``, ``score`` (factors shared) and ``domain``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.embedded.cache import config_key, write_once

VERSION = 1

#: Domain -> factor -> values, each value a tuple of synonyms (verbs in the past tense, which is
#: also their participle).
DOMAINS: dict[str, dict[str, list[tuple[str, ...]]]] = {
    "kitchen": {
        "subject": [
            ("chef", "cook"),
            ("baker", "pastry maker"),
            ("waiter", "server"),
            ("grandmother", "grandma"),
            ("student", "pupil"),
        ],
        "verb": [
            ("chopped", "cut", "sliced"),
            ("washed", "rinsed", "cleaned"),
            ("cooked", "heated", "warmed"),
            ("tasted", "sampled"),
            ("served", "offered"),
        ],
        "object": [
            ("onion", "shallot"),
            ("tomato", "plum tomato"),
            ("loaf", "bread"),
            ("fish", "trout"),
            ("soup", "broth"),
            ("cake", "sponge"),
        ],
    },
    "sports": {
        "subject": [
            ("player", "athlete"),
            ("coach", "trainer"),
            ("referee", "umpire"),
            ("goalkeeper", "keeper"),
            ("captain", "team leader"),
        ],
        "verb": [
            ("kicked", "booted"),
            ("threw", "tossed", "hurled"),
            ("caught", "grabbed"),
            ("carried", "held"),
            ("hit", "struck"),
        ],
        "object": [
            ("ball", "football"),
            ("racket", "bat"),
            ("flag", "banner"),
            ("trophy", "cup"),
            ("whistle", "horn"),
            ("helmet", "headgear"),
        ],
    },
    "science": {
        "subject": [
            ("chemist", "lab scientist"),
            ("physicist", "researcher"),
            ("technician", "lab assistant"),
            ("professor", "lecturer"),
            ("engineer", "designer"),
        ],
        "verb": [
            ("measured", "weighed"),
            ("heated", "warmed"),
            ("tested", "examined", "checked"),
            ("mixed", "stirred", "blended"),
            ("cooled", "chilled"),
        ],
        "object": [
            ("sample", "specimen"),
            ("liquid", "fluid"),
            ("crystal", "mineral"),
            ("magnet", "lodestone"),
            ("circuit", "wiring"),
            ("powder", "dust"),
        ],
    },
    "travel": {
        "subject": [
            ("tourist", "visitor", "traveller"),
            ("pilot", "aviator"),
            ("driver", "chauffeur"),
            ("guide", "tour leader"),
            ("sailor", "seaman"),
        ],
        "verb": [
            ("packed", "loaded"),
            ("lost", "misplaced"),
            ("found", "discovered"),
            ("photographed", "filmed"),
            ("bought", "purchased"),
        ],
        "object": [
            ("suitcase", "luggage"),
            ("ticket", "pass"),
            ("map", "chart"),
            ("camera", "lens"),
            ("passport", "travel document"),
            ("backpack", "rucksack"),
        ],
    },
}
SHARED: dict[str, list[tuple[str, ...]]] = {
    "attribute": [
        ("red", "scarlet"),
        ("large", "big", "huge"),
        ("small", "little", "tiny"),
        ("old", "ancient", "aged"),
        ("new", "brand new", "fresh"),
        ("heavy", "weighty"),
        ("wet", "damp", "soaked"),
        ("broken", "damaged"),
    ],
    "place": [
        ("in the morning", "at dawn", "early in the day"),
        ("near the river", "by the stream", "beside the water"),
        ("in the city", "downtown", "in town"),
        ("at home", "in the house"),
        ("on the hill", "up the slope"),
        ("in the rain", "during the storm"),
        ("at night", "after dark", "late in the evening"),
        ("on the bus", "aboard the coach"),
    ],
}
#: The five content factors a pair's gold score counts (the domain is their context).
FACTORS = ("subject", "verb", "object", "attribute", "place")
DOMAIN_NAMES = tuple(DOMAINS)
#: A description of each domain, in ``DOMAIN_NAMES`` order (label descriptions).
DOMAIN_DESCRIPTIONS = (
    "a sentence about cooking and food in a kitchen",
    "a sentence about a sports game and its players",
    "a sentence about a science laboratory experiment",
    "a sentence about travelling and tourism",
)
FILLERS = ("yesterday", "quietly", "again", "as usual", "it seems", "once more", "slowly")
TEMPLATES = 5


def sizes(domain: str) -> dict[str, int]:
    """Number of values of each factor in ``domain``."""
    table = {**DOMAINS[domain], **SHARED}
    return {f: len(table[f]) for f in FACTORS}


def vocabulary() -> list[str]:
    """Every word the generator can write, sorted (its grammar words included)."""
    words = {"the", "a", "was", "by", "that", "it", "who", ","}
    tables = [*DOMAINS.values(), SHARED]
    for table in tables:
        for values in table.values():
            for synonyms in values:
                for phrase in synonyms:
                    words.update(phrase.split())
    for filler in FILLERS:
        words.update(filler.split())
    return sorted(words)


@dataclass(frozen=True)
class Meaning:
    """A domain and one value index per content factor."""

    domain: int
    subject: int
    verb: int
    object: int
    attribute: int
    place: int

    def values(self) -> tuple[int, ...]:
        return tuple(getattr(self, f) for f in FACTORS)

    def shared(self, other: Meaning) -> int:
        """Content factors with the same value (0 across domains for the domain's own)."""
        same = [a == b for a, b in zip(self.values(), other.values(), strict=True)]
        if self.domain != other.domain:
            same = [s for f, s in zip(FACTORS, same, strict=True) if f in SHARED]
        return int(sum(same))

    def id(self) -> int:
        """A unique integer id of the meaning."""
        key = self.domain
        for v in self.values():
            key = key * 16 + v
        return key


def random_meaning(rng: np.random.Generator, domain: int | None = None) -> Meaning:
    """A meaning drawn uniformly (in ``domain`` if given)."""
    d = int(rng.integers(len(DOMAINS))) if domain is None else domain
    n = sizes(DOMAIN_NAMES[d])
    return Meaning(d, *(int(rng.integers(n[f])) for f in FACTORS))


def change(meaning: Meaning, factors: list[str], rng: np.random.Generator) -> Meaning:
    """``meaning`` with each of ``factors`` set to another value of its domain."""
    n = sizes(DOMAIN_NAMES[meaning.domain])
    values = dict(zip(FACTORS, meaning.values(), strict=True))
    for f in factors:
        values[f] = (values[f] + 1 + int(rng.integers(n[f] - 1))) % n[f]
    return Meaning(meaning.domain, *(values[f] for f in FACTORS))


@dataclass(frozen=True)
class Surface:
    """How a meaning is written: a template, one synonym per factor, an optional filler."""

    template: int
    synonyms: tuple[int, ...]  # per FACTORS
    filler: int  # -1: none


def random_surface(meaning: Meaning, rng: np.random.Generator) -> Surface:
    table = {**DOMAINS[DOMAIN_NAMES[meaning.domain]], **SHARED}
    synonyms = tuple(
        int(rng.integers(len(table[f][v]))) for f, v in zip(FACTORS, meaning.values(), strict=True)
    )
    filler = int(rng.integers(len(FILLERS))) if rng.random() < 0.4 else -1
    return Surface(int(rng.integers(TEMPLATES)), synonyms, filler)


def realise(meaning: Meaning, surface: Surface, drop: frozenset[str] = frozenset()) -> str:
    """The sentence of ``meaning`` written as ``surface``; factors in ``drop`` (``attribute``,
    ``place``) are left out (a less specific sentence the full one entails)."""
    table = {**DOMAINS[DOMAIN_NAMES[meaning.domain]], **SHARED}
    word = {
        f: table[f][v][s % len(table[f][v])]
        for f, v, s in zip(FACTORS, meaning.values(), surface.synonyms, strict=True)
    }
    subj, verb, obj = word["subject"], word["verb"], word["object"]
    attr = "" if "attribute" in drop else word["attribute"] + " "
    place = "" if "place" in drop else word["place"]
    filler = FILLERS[surface.filler] if surface.filler >= 0 else ""
    t = surface.template
    if t == 0:
        parts = [f"the {subj}", filler, f"{verb} the {attr}{obj}", place]
    elif t == 1:
        parts = [f"{place} ," if place else "", f"the {subj} {verb} the {attr}{obj}", filler]
    elif t == 2:
        parts = [f"the {attr}{obj} was {verb} by the {subj}", filler, place]
    elif t == 3:
        what = f"the {obj} that was {word['attribute']}" if attr else f"the {obj}"
        parts = [f"the {subj} {verb} {what}", place, filler]
    else:
        parts = [f"it was the {subj} who", filler, f"{verb} the {attr}{obj}", place]
    return " ".join(p for p in parts if p)


@dataclass(frozen=True)
class SentencesConfig:
    """Sizes (training meanings, evaluation pairs) and the seed of the built-in sentences."""

    num_train: int = 10000
    num_val: int = 1000
    num_test: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.num_train, self.num_val, self.num_test) < 1:
            raise ValueError("num_train, num_val and num_test must be at least 1")

    def key(self) -> str:
        return config_key(self, VERSION)


def training_record(rng: np.random.Generator) -> dict[str, Any]:
    """One training meaning in every form a training mode reads (see the module docstring)."""
    meaning = random_meaning(rng)
    surface = random_surface(meaning, rng)
    dropped = frozenset([("attribute", "place")[int(rng.integers(2))]])
    changed = change(meaning, [("verb", "object")[int(rng.integers(2))]], rng)
    return {
        "meaning": meaning.id(),
        "domain": meaning.domain,
        "sentence": realise(meaning, surface),
        "paraphrase": realise(meaning, random_surface(meaning, rng)),
        "entailment": realise(meaning, random_surface(meaning, rng), dropped),
        "contradiction": realise(changed, surface),
    }


def sts_record(rng: np.random.Generator) -> dict[str, Any]:
    """One STS pair: the second meaning shares a uniform 0-5 of the first's factors."""
    first = random_meaning(rng)
    keep = int(rng.integers(len(FACTORS) + 1))
    changed = [str(f) for f in rng.permutation(FACTORS)[keep:]]
    second = change(first, changed, rng)
    return {
        "sentence1": realise(first, random_surface(first, rng)),
        "sentence2": realise(second, random_surface(second, rng)),
        "score": float(first.shared(second)),
        "domain": first.domain,
    }


def sentences_dir(cfg: SentencesConfig, cache_root: Path) -> Path:
    return cache_root / f"sentences-{cfg.key()}"


def _write(cfg: SentencesConfig, directory: Path) -> None:
    counts = {"train": cfg.num_train, "val": cfg.num_val, "test": cfg.num_test}
    for k, (split, count) in enumerate(counts.items()):
        rng = np.random.default_rng([cfg.seed, k])
        record = training_record if split == "train" else sts_record
        with (directory / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            for _ in range(count):
                f.write(json.dumps(record(rng)) + "\n")


def ensure_sentences(cfg: SentencesConfig, cache_root: Path) -> Path:
    """The directory of the generated sentences (written on first use)."""
    return write_once(sentences_dir(cfg, cache_root), partial(_write, cfg))


def load_records(directory: Path, split: str) -> list[dict[str, Any]]:
    """The records of one generated split."""
    with (directory / f"{split}.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]
