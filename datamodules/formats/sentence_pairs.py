"""Sentence pairs in the public formats of sentence-embedding research.

- **STS** (:func:`read_sts_tsv`), tab-separated, one pair per line:
  the original STS-B files (``sts-train.csv`` / ``sts-dev.csv`` / ``sts-test.csv`` as SentEval
  ships them, no header: genre, file, year, id, score, sentence1, sentence2[, sources]); the
  GLUE STS-B TSVs (header with ``sentence1``, ``sentence2``, ``score``); SICK (header with
  ``sentence_A``, ``sentence_B``, ``relatedness_score``: the per-split files, or the whole
  release ``SICK.txt``, whose ``SemEval_set`` column says the split: its TRAIN, TRIAL or TEST
  rows are read for train, val or test). Columns are split on tabs only (STS-B sentences
  contain quotes, so no CSV quoting). A GLUE test file has no scores and cannot be used to
  evaluate.
- **NLI** (:func:`read_nli_jsonl`), SNLI / MultiNLI JSONL (``sentence1``, ``sentence2``,
  ``gold_label``): grouped by premise into (premise, entailment, contradiction) triples, one per
  entailed hypothesis of a premise that has a contradicted one (its contradictions reused in
  turn), as SimCSE's maintainers describe ``nli_for_simcse.csv`` (entailment pairs without a
  hard negative filtered out; SimCSE issue #238; the exact pairing is not published); pairs
  labelled ``-`` (no gold label) or ``neutral`` are not used.

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
#: The rows of each split in SICK.txt's ``SemEval_set`` column.
SICK_SETS = {"train": "TRAIN", "val": "TRIAL", "test": "TEST"}


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataFileMissing(f"{path}: no such file")
    with utf8_text(path), path.open(encoding="utf-8-sig", newline="") as f:
        return [line.rstrip("\r\n") for line in f]


def read_sts_tsv(path: str | Path, split: str = "test") -> list[tuple[str, str, float]]:
    """(sentence 1, sentence 2, gold score) per pair of an STS-B or SICK file; of a file with a
    ``SemEval_set`` column (SICK.txt) only the rows of ``split``."""
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
    if columns is None and {"sentence1", "sentence2"} <= set(first):
        raise DataError(f"{path}: its header has sentence1 and sentence2 but no score column")
    semeval = first.index("SemEval_set") if columns and "SemEval_set" in first else None
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
        if semeval is not None and cells[semeval].strip() != SICK_SETS[split]:
            continue
        pairs.append((cells[s1].strip(), cells[s2].strip(), value))
    if not pairs:
        raise DataError(f"{path}: no sentence pair" + (f" of {split}" if semeval else ""))
    return pairs


def read_nli_jsonl(path: str | Path) -> list[tuple[str, str, str]]:
    """(premise, entailment, contradiction) triples of an SNLI / MNLI JSONL file: one per entailed
    hypothesis of a premise, with the premise's contradicted hypotheses in turn (premises lacking
    either give none)."""
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
        (premise, entailed, contradicted[k % len(contradicted)])
        for premise, by_label in hypotheses.items()
        if (contradicted := by_label.get("contradiction"))
        for k, entailed in enumerate(by_label.get("entailment", []))
    ]
    if not triples:
        raise DataError(
            f"{path}: no premise with both an entailment and a contradiction hypothesis"
        )
    return triples
