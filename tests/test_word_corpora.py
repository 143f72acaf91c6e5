"""The word_corpora family: the generator's gold structure, the batches, and the readers of
MUSE dictionaries, fastText .vec files and word lists (one-line errors naming file:line)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.embedded.shapes import COLORS, SHAPES
from datamodules.embedded.word_corpora import WordCorporaConfig, generate, write_corpora
from datamodules.errors import DataError
from datamodules.formats.word_vectors import read_dictionary, read_vec, read_word_list
from datamodules.word_corpora import WordCorporaDataConfig, WordCorporaDataModule

SMALL = dict(num_train=120, num_val=1, num_test=1, min_count=2, batch_size=16)


def module(tmp_path: Path, **overrides) -> WordCorporaDataModule:
    cfg = WordCorporaDataConfig(cache_dir=str(tmp_path), **{**SMALL, **overrides})
    data = WordCorporaDataModule(cfg)
    data.prepare_data()
    data.setup()
    return data


def test_languages_corpora_are_comparable_and_the_lexicon_splits() -> None:
    data = generate(WordCorporaConfig(num_sentences=200, min_count=2))
    assert data.corpus_a != [t.replace("q1", "") for t in data.corpus_b]  # not parallel
    assert all(w.endswith("q1") for line in data.corpus_b for w in line.split() if w.isalnum())
    train, test = set(data.train_pairs), set(data.test_pairs)
    assert train and test and not train & test
    assert all(b == f"{a}q1" for a, b in train | test)
    assert generate(WordCorporaConfig(num_sentences=200, min_count=2)) == data


def test_periods_shift_exactly_the_gold_words() -> None:
    """Period B is period A's world with the gold words swapped in pairs: in B each shifted
    word has its partner's frequency in A (the kept words keep their own)."""
    cfg = WordCorporaConfig(mode="periods", num_sentences=1500, min_count=2, num_shifted=4)
    data = generate(cfg)
    assert len(data.shifted) == 4 and set(data.shifted) <= set(COLORS) | set(SHAPES)
    count_a = Counter(w for line in data.corpus_a for w in line.split())
    count_b = Counter(w for line in data.corpus_b for w in line.split())
    colours = [w for w in data.shifted if w in COLORS]
    shapes = [w for w in data.shifted if w in SHAPES]
    assert len(colours) == len(shapes) == 2  # one colour pair, one shape pair
    pairs = [*zip(colours, colours[::-1], strict=True), *zip(shapes, shapes[::-1], strict=True)]
    for word, other in pairs:
        assert abs(count_b[other] - count_a[word]) < abs(count_b[other] - count_a[other])
    assert all(a == b for a, b in data.train_pairs) and len(data.train_pairs) > 40


def test_windows_batches(tmp_path: Path) -> None:
    data = module(tmp_path)
    batch = next(iter(data.train_dataloader()))
    assert batch["corpus_a"].shape == (16, 10) and batch["negatives/corpus_b"].shape == (16, 10)
    assert batch["center/corpus_a"].shape == (16,)
    assert (batch["corpus_a"] >= -1).all() and (batch["corpus_a"] < len(data.words)).all()
    assert data.tower_context() == {"num_words": len(data.words)}


def test_dictionary_and_evaluation_batches(tmp_path: Path) -> None:
    data = module(tmp_path, train="dictionary", batch_size=4)
    words = data.words
    batch = next(iter(data.train_dataloader()))
    for a, b in zip(batch["corpus_a"][:, 0], batch["corpus_b"][:, 0], strict=True):
        assert words[int(b)] == f"{words[int(a)]}q1"
    evaluation = next(iter(data.test_dataloader()))
    gold = evaluation["label/gold"]
    queries = (gold >= 0).any(dim=1)
    assert queries.sum() == len(data.corpora.test_pairs)
    for i in torch.nonzero(queries).flatten():
        assert words[int(gold[i, 0])] == f"{words[int(evaluation['index'][i])]}q1"


def test_periods_evaluation_labels(tmp_path: Path) -> None:
    data = module(tmp_path, mode="periods", num_shifted=2)
    batch = next(iter(data.test_dataloader()))
    shifted = {data.words[int(i)] for i in batch["index"][batch["label/shifted"] == 1]}
    assert shifted == set(data.corpora.shifted)


def test_files_format_reads_the_generated_layout(tmp_path: Path) -> None:
    write_corpora(generate(WordCorporaConfig(num_sentences=100, min_count=2)), tmp_path)
    cfg = WordCorporaDataConfig(format="files", root=str(tmp_path), **SMALL)
    data = WordCorporaDataModule(cfg)
    data.setup()
    assert len(data.words) > 20


def test_readers_and_their_one_line_errors(tmp_path: Path) -> None:
    good = tmp_path / "en-si.txt"
    good.write_text("cat පූසා\n\ndog බල්ලා\n", encoding="utf-8")
    assert read_dictionary(good) == [("cat", "පූසා"), ("dog", "බල්ලා")]
    bad = tmp_path / "bad.txt"
    bad.write_text("cat පූසා\ndog\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{bad}:2: expected 'source target'"):
        read_dictionary(bad)

    vec = tmp_path / "wiki.vec"
    vec.write_text("2 3\ncat 0.1 0.2 0.3\ndog 1 2 3\n")
    words, vectors = read_vec(vec)
    assert words == ["cat", "dog"]
    np.testing.assert_allclose(vectors[1], [1, 2, 3])
    vec.write_text("2 3\ncat 0.1 0.2 0.3\ndog 1 x 3\n")
    with pytest.raises(DataError, match=rf"^{vec}:3: a value of 'dog' is not a number"):
        read_vec(vec)
    vec.write_text("2 3\ncat 0.1 0.2\ndog 1 2 3\n")
    with pytest.raises(DataError, match=rf"^{vec}:2: expected a word and 3 numbers"):
        read_vec(vec)
    vec.write_text("two 3\ncat 0.1 0.2 0.3\n")
    with pytest.raises(DataError, match=rf"^{vec}:1: expected the header"):
        read_vec(vec)

    shifted = tmp_path / "shifted.txt"
    shifted.write_text("gay\nbroadcast\nplane tree\n")
    with pytest.raises(DataError, match=rf"^{shifted}:3: expected one word"):
        read_word_list(shifted)
