"""The built-in dictionary: entries and their definitions, written in the generated language of
the ``sentences`` family (datamodules/embedded/sentences.py: its meanings, synonyms, templates
and ``realise``), so that a model trained on definitions is evaluated on that family's STS pairs.

An entry is one meaning (domain, subject, verb, object, attribute, place), its headword a
multi-word phrase naming it (``chef-chopped-red-onion-in-the-morning``: DefSent+'s entries are
not limited to single words). Its ``definitions_per_entry`` definitions are independent
realisations of the meaning (another template, other synonyms, a filler word), as a merged
dictionary (the DefSent+ code trains on Oxford + WordNet) defines one entry in several words;
a definition leaves the attribute or the place out with probability ``drop_probability`` (a
less specific definition). Definitions of one entry therefore share the meaning and often few
words: what projecting them onto one entry teaches is the paraphrase structure the STS gold
scores count.

What the cache holds (``DefinitionsConfig``; deterministic from ``seed``):

- ``train.jsonl``: one record per definition: ``entry`` (headword), ``entry_id``, ``definition``,
  ``domain``; the entries are ``num_entries`` distinct meanings drawn at random;
- the validation/test STS pairs are the ``sentences`` family's own (``ensure_sentences`` with
  the same seed and sizes: the very pairs a SimCSE run on ``sentences`` is scored on).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.embedded.cache import config_key, write_once
from datamodules.embedded.sentences import (
    DOMAIN_NAMES,
    DOMAINS,
    FACTORS,
    SHARED,
    Meaning,
    random_meaning,
    random_surface,
    realise,
)

VERSION = 1
#: Factors a less specific definition may leave out.
OPTIONAL = ("attribute", "place")


@dataclass(frozen=True)
class DefinitionsConfig:
    """Entries, definitions per entry, the chance a definition drops a factor, and the seed."""

    num_entries: int = 2500
    definitions_per_entry: int = 4
    drop_probability: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_entries < 2:
            raise ValueError(f"num_train: at least 2 entries, got {self.num_entries}")
        if self.definitions_per_entry < 1:
            raise ValueError(f"definitions_per_entry: at least 1, got {self.definitions_per_entry}")
        if not 0.0 <= self.drop_probability <= 1.0:
            raise ValueError(f"drop_probability: must be in [0, 1], got {self.drop_probability}")

    def key(self) -> str:
        return config_key(self, VERSION)


def headword(meaning: Meaning) -> str:
    """The entry's name: the first synonym of every factor, hyphenated."""
    table = {**DOMAINS[DOMAIN_NAMES[meaning.domain]], **SHARED}
    words = [table[f][v][0] for f, v in zip(FACTORS, meaning.values(), strict=True)]
    return "-".join(" ".join(words).split())


def entries_of(cfg: DefinitionsConfig, rng: np.random.Generator) -> list[Meaning]:
    """``num_entries`` distinct meanings, drawn at random."""
    seen: dict[int, Meaning] = {}
    while len(seen) < cfg.num_entries:
        meaning = random_meaning(rng)
        seen.setdefault(meaning.id(), meaning)
    return list(seen.values())


def definition_records(cfg: DefinitionsConfig, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Every definition of every entry (module docstring)."""
    records = []
    for entry_id, meaning in enumerate(entries_of(cfg, rng)):
        name = headword(meaning)
        for _ in range(cfg.definitions_per_entry):
            drop = frozenset()
            if rng.random() < cfg.drop_probability:
                drop = frozenset([OPTIONAL[int(rng.integers(len(OPTIONAL)))]])
            records.append(
                {
                    "entry": name,
                    "entry_id": entry_id,
                    "definition": realise(meaning, random_surface(meaning, rng), drop),
                    "domain": meaning.domain,
                }
            )
    return records


def definitions_dir(cfg: DefinitionsConfig, cache_root: Path) -> Path:
    return cache_root / f"definitions-{cfg.key()}"


def _write(cfg: DefinitionsConfig, directory: Path) -> None:
    rng = np.random.default_rng([cfg.seed, 0])
    with (directory / "train.jsonl").open("w", encoding="utf-8") as f:
        for record in definition_records(cfg, rng):
            f.write(json.dumps(record) + "\n")


def ensure_definitions(cfg: DefinitionsConfig, cache_root: Path) -> Path:
    """The directory of the generated dictionary (written on first use)."""
    return write_once(definitions_dir(cfg, cache_root), partial(_write, cfg))


def load_definitions(directory: Path) -> list[dict[str, Any]]:
    """The generated definitions, one record each."""
    with (directory / "train.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]
