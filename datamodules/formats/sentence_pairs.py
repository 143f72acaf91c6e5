"""Sentence pairs in the public formats of sentence-embedding research.

- **STS** (:func:`read_sts_tsv`), tab-separated, one pair per line:
  the original STS-B files (``sts-train.csv`` / ``sts-dev.csv`` / ``sts-test.csv`` as SentEval
  ships them, no header: genre, file, year, id, score, sentence1, sentence2[, sources]); the
  GLUE STS-B TSVs (header with ``sentence1``, ``sentence2``, ``score``); SICK (``SICK.txt``:
  header with ``sentence_A``, ``sentence_B``, ``relatedness_score``). Columns are split on tabs
  only (STS-B sentences contain quotes, so no CSV quoting). A GLUE test file has no scores and
  cannot be used to evaluate.
- **NLI** (:func:`read_nli_jsonl`), SNLI / MultiNLI JSONL (``sentence1``, ``sentence2``,
  ``gold_label``): grouped by premise into (premise, entailment, contradiction) triples, as
  supervised SimCSE builds its training file from SNLI + MNLI; pairs labelled ``-`` (no gold
  label) or ``neutral`` are not used.

Malformed lines are one-line :class:`DataError` s naming ``file:line``.
"""

from __future__ import annotations

import math
from pathlib import Path

from datamodules.errors import DataError, DataFileMissing, utf8_text
from datamodules.formats.jsonl import json_lines

#: Header names of (sentence 1, sentence 2, score) in the STS TSVs that have a header.
STS_HEADERS = (
    ("sentence1", "sentence2", "score"),  # GLUE STS-B
    ("sentence_A", "sentence_B", "relatedness_score"),  # SICK
)
#: Columns of (sentence 1, sentence 2, score) in the original STS-B files (no header).
STSB_COLUMNS = (5, 6, 4)


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataFileMissing(f"{path}: no such file")
    with utf8_text(path), path.open(encoding="utf-8-sig", newline="") as f:
        return [line.rstrip("\r\n") for line in f]


def read_sts_tsv(path: str | Path) -> list[tuple[str, str, float]]:
    """(sentence 1, sentence 2, gold score) per pair of an STS-B or SICK file."""
    path = Path(path)
    lines = _lines(path)
    first = lines[0].split("\t") if lines else []
    columns = next(
        (
            tuple(first.index(name) for name in names)
            for names in STS_HEADERS
            if set(names) <= set(first)
        ),
        None,
    )
    s1, s2, score = columns or STSB_COLUMNS
    pairs = []
    for number, line in enumerate(lines[1:] if columns else lines, start=2 if columns else 1):
        if not line.strip():
            continue
        cells = line.split("\t")
        where = f"{path}:{number}"
        if len(cells) <= max(s1, s2, score):
            raise DataError(
                f"{where}: {len(cells)} tab-separated columns, expected at least "
                f"{max(s1, s2, score) + 1} (STS-B: genre, file, year, id, score, sentence1, "
                "sentence2; or a header naming sentence1/sentence2/score)"
            )
        try:
            value = float(cells[score])
        except ValueError:
            raise DataError(f"{where}: score {cells[score]!r} is not a number") from None
        if not math.isfinite(value):
            raise DataError(f"{where}: score {cells[score]!r} is not a finite number")
        if not cells[s1].strip() or not cells[s2].strip():
            raise DataError(f"{where}: an empty sentence")
        pairs.append((cells[s1].strip(), cells[s2].strip(), value))
    if not pairs:
        raise DataError(f"{path}: no sentence pair")
    return pairs


def read_nli_jsonl(path: str | Path) -> list[tuple[str, str, str]]:
    """(premise, entailment, contradiction) triples of an SNLI / MNLI JSONL file: each premise's
    entailed hypotheses paired in order with its contradicted ones (premises lacking either
    give none)."""
    path = Path(path)
    hypotheses: dict[str, dict[str, list[str]]] = {}
    for where, row in json_lines(path):
        missing = [k for k in ("sentence1", "sentence2", "gold_label") if k not in row]
        if missing:
            raise DataError(f"{where}: missing field(s) {missing} (SNLI/MNLI JSONL)")
        if not all(isinstance(row[k], str) for k in ("sentence1", "sentence2", "gold_label")):
            raise DataError(f"{where}: sentence1, sentence2 and gold_label must be strings")
        label = row["gold_label"]
        if label in ("entailment", "contradiction"):
            by_label = hypotheses.setdefault(row["sentence1"].strip(), {})
            by_label.setdefault(label, []).append(row["sentence2"].strip())
    triples = [
        (premise, entailed, contradicted)
        for premise, by_label in hypotheses.items()
        for entailed, contradicted in zip(
            by_label.get("entailment", []), by_label.get("contradiction", []), strict=False
        )
    ]
    if not triples:
        raise DataError(
            f"{path}: no premise with both an entailment and a contradiction hypothesis"
        )
    return triples
