"""The ``segmented_documents`` family: the built-in topic chains (deterministic, gold
boundaries, coherence needed: boundaries that share words, segments whose neighbours do not),
the batches (documents as [B, S, L], the disarrayed copy in training), and the Wiki-727K-style
reader and source, malformed files included."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.embedded.segmented_documents import (
    PLACES,
    SUBJECTS,
    SegmentedDocumentsConfig,
    generate_split,
)
from datamodules.errors import DataError
from datamodules.formats.wiki_sections import read_wiki_document
from datamodules.segmented_documents import (
    SegmentedDocumentsDataConfig,
    SegmentedDocumentsDataModule,
    flatten,
)
from modules.towers.tokenizer import WordTokenizer
from modules.words import split_words

TINY = SegmentedDocumentsConfig(num_train=60, num_val=5, num_test=5)
CONTENT = {w for pair in SUBJECTS + PLACES for w in pair}


def _content(sentence: str) -> set[str]:
    return set(split_words(sentence)) & CONTENT


def test_generation_is_deterministic_and_segmented() -> None:
    docs = generate_split(TINY, "train")
    assert docs == generate_split(TINY, "train") and docs != generate_split(TINY, "val")
    assert len(docs) == 60
    for doc in docs:
        assert TINY.min_segments <= len(doc) <= TINY.max_segments
        assert all(TINY.min_sentences <= len(seg) <= TINY.max_sentences for seg in doc)


def test_coherence_is_needed_to_find_the_boundaries() -> None:
    """Across many boundaries the two neighbours share a content word, and inside many
    segments two neighbours share none: word overlap of neighbours alone misleads."""
    shared_across = inside_disjoint = boundaries = inside = 0
    for doc in generate_split(TINY, "train"):
        sentences, boundary = flatten(doc, 1000)
        for i in range(len(sentences) - 1):
            overlap = bool(_content(sentences[i]) & _content(sentences[i + 1]))
            if boundary[i]:
                boundaries += 1
                shared_across += overlap
            else:
                inside += 1
                inside_disjoint += not overlap
    # measured on 500 documents: 16 % of boundaries share a word, 64 % of inner pairs none
    assert shared_across / boundaries > 0.1 and inside_disjoint / inside > 0.5


def _datamodule(**fields) -> SegmentedDocumentsDataModule:
    sizes = {"num_train": 24, "num_val": 4, "num_test": 4, "batch_size": 4, "eval_batch_size": 4}
    cfg = SegmentedDocumentsDataConfig(**{**sizes, **fields})
    dm = SegmentedDocumentsDataModule(cfg)
    dm.setup()
    dm.tokenizer = WordTokenizer.build(dm.training_texts(), max_len=cfg.max_text_len)
    return dm


def test_batches_lay_out_documents_and_their_disarrayed_copy() -> None:
    dm = _datamodule()
    batch = next(iter(dm.train_dataloader()))
    b, s, length = batch["text_ids"].shape
    assert b == 4 and batch["boundary"].shape == (4, s)
    real = batch["text_mask"][..., 0]
    assert ((batch["boundary"] >= 0) == real).all()
    for row in range(b):  # each document ends a segment at its last sentence
        assert batch["boundary"][row, real[row].sum() - 1] == 1
    assert batch["disarrayed_ids"].shape[2] == length
    assert batch["disarrayed_order"].shape == batch["disarrayed_boundary"].shape
    assert ((batch["disarrayed_order"] >= 0) == batch["disarrayed_mask"][..., 0]).all()
    assert batch["seed"].shape == (4,)
    again = next(iter(dm.train_dataloader()))  # the same seed: the same disarrayed copies
    assert (again["disarrayed_ids"] == batch["disarrayed_ids"]).all()
    evaluation = next(iter(dm.test_dataloader()))
    assert "disarrayed_ids" not in evaluation and "seed" not in evaluation


HEADER = "========,1,preface."


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_reader_reads_sections_as_segments(tmp_path) -> None:
    path = _write(
        tmp_path / "doc",
        [
            HEADER,
            "First sentence.",
            "Second one.",
            "========,2,History.",
            "========,2,Early.",
            "Third.",
            "",
            "Fourth.",
        ],
    )
    assert read_wiki_document(path) == [["First sentence.", "Second one."], ["Third.", "Fourth."]]


@pytest.mark.parametrize(
    "lines, where, what",
    [
        ([HEADER, "a.", "========,x,Bad.", "b."], ":3:", "malformed segment header"),
        (["a stray sentence.", HEADER, "a."], ":1:", "before the first segment header"),
        ([HEADER, "========,1,Empty."], "", "no sentences"),
    ],
)
def test_reader_names_file_and_line_of_a_bad_entry(tmp_path, lines, where, what) -> None:
    path = _write(tmp_path / "bad_doc", lines)
    with pytest.raises(DataError, match=what) as caught:
        read_wiki_document(path)
    message = str(caught.value)
    assert f"{path}{where}" in message and "\n" not in message


def test_wiki727k_source_feeds_the_datamodule(tmp_path) -> None:
    for split, folder in (("train", "train"), ("val", "dev"), ("test", "test")):
        for d in range(3):
            _write(
                tmp_path / folder / f"{split}{d}",
                [HEADER, f"the cat sits {d}.", "the cat runs.", "========,1,Next.", "a dog."],
            )
    dm = _datamodule(format="wiki727k", root=str(tmp_path), batch_size=2)
    assert dm.num_items("val") == 3
    batch = next(iter(dm.train_dataloader()))
    assert batch["boundary"][0].tolist() == [0, 1, 1]
    _write(tmp_path / "test" / "zz_broken", ["========,one,Bad."])
    fresh = SegmentedDocumentsDataModule(dm.cfg)
    with pytest.raises(DataError, match=r"zz_broken:1: malformed"):
        fresh.setup("test")
