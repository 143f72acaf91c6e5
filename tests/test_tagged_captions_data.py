"""The tagged captions family: tagging rules, the target language, the CoNLL reader (with its
one-line errors) and the batches' token-aligned tags."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from datamodules.embedded.tagged_captions import (
    TaggedCaptionsConfig,
    generate,
    is_shared,
    tag_words,
    to_target,
)
from datamodules.errors import DataError
from datamodules.formats.conll import read_conll
from datamodules.tagged_captions import TaggedCaptionsDataConfig, TaggedCaptionsDataModule
from modules.towers.tokenizer import WordTokenizer
from modules.words import split_words


def test_tags_of_a_caption_by_hand():
    words = split_words("two shapes: a tiny red star to the left of a circle in the top left")
    tags = dict(enumerate(tag_words(words)))
    assert [(w, tags[i]) for i, w in enumerate(words) if tags[i] != "O"] == [
        ("two", "B-COUNT"),
        ("tiny", "B-SIZE"),
        ("red", "B-COLOR"),
        ("star", "B-SHAPE"),
        ("left", "B-RELATION"),  # "left of": a relation ...
        ("of", "I-RELATION"),
        ("circle", "B-SHAPE"),
        ("top", "B-POSITION"),  # ... "top left" without "of": a position
        ("left", "I-POSITION"),
    ]
    assert tag_words(["higher", "than", "above"]) == ["B-RELATION", "I-RELATION", "B-RELATION"]


def test_target_language_keeps_the_shared_words_and_the_tags():
    cfg = TaggedCaptionsConfig(num_train=20, num_val=2, num_test=2, shared_words=0.5)
    source, target = generate(cfg, "val", 0), generate(cfg, "val", 1)
    assert source[0].words != target[0].words  # scenes are drawn per language
    words = ["a", "red", "circle", ","]
    mapped = to_target(words, 0.5)
    for w, m in zip(words, mapped, strict=True):
        assert m == w if is_shared(w, 0.5) or not w.isalnum() else m == f"{w}q1"
    assert to_target(words, 1.0) == words
    assert to_target(words, 0.0) == ["aq1", "redq1", "circleq1", ","]
    every = [w for s in generate(cfg, "train", 0) for w in s.words]
    shared = {w for w in every if is_shared(w, 0.5)}
    assert 0 < len(shared) < len(set(every))


CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
U.S. NNP B-NP I-LOC
call NN I-NP O

Peter NNP B-NP B-PER
"""


def test_conll_reader_reads_sentences_and_names_a_malformed_line(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text(CONLL)
    sentences = read_conll(path)
    assert [s.words for s in sentences] == [("EU", "rejects", "U.S.", "call"), ("Peter",)]
    assert sentences[0].tags == ("B-ORG", "O", "I-LOC", "O")
    path.write_text(CONLL.replace("call NN I-NP O", "call"))
    with pytest.raises(DataError, match=rf"^{path}:6: expected 'token \.\.\. tag', got 'call'$"):
        read_conll(path)
    path.write_text(CONLL.replace("B-PER", "PER"))
    with pytest.raises(DataError, match=rf"^{path}:8: tag 'PER' is not O"):
        read_conll(path)


def _module(cfg: TaggedCaptionsDataConfig) -> TaggedCaptionsDataModule:
    dm = TaggedCaptionsDataModule(cfg)
    dm.prepare_data()
    dm.setup()
    dm.tokenizer = WordTokenizer.build(dm.training_texts(), max_len=cfg.max_text_len)
    return dm


def test_embedded_batches_align_tags_and_hide_the_target_in_training(tmp_path):
    cfg = TaggedCaptionsDataConfig(
        num_train=16, num_val=4, num_test=4, batch_size=32, cache_dir=str(tmp_path)
    )
    dm = _module(cfg)
    names = dm.class_names["tags"]
    assert names[0] == "O" and "B-POSITION" in names and len(names) == 13  # 6 types
    train = next(iter(dm.train_dataloader()))
    source = train["label/language"] == 0
    assert source.sum() == 16 and train["tags"].shape == train["text_ids"].shape
    words = train["tags"] != -1
    assert (train["tags"][~source][words[~source]] == -2).all()  # target tags hidden
    assert (train["tags"][source][words[source]] >= 0).all()
    # one token per caption word, <cls> and padding untagged
    assert torch.equal(words, train["text_mask"] & (torch.arange(words.shape[1]) > 0))
    val = next(iter(dm.val_dataloader()))
    assert val["label/language"].tolist() == [0] * 4 + [1] * 4
    assert (val["tags"][val["tags"] != -1] >= 0).all()  # both languages labelled
    sentence = dm.source.split("val").words[5]  # a target sentence
    ids = val["tags"][5][1 : len(sentence) + 1].tolist()
    assert [names[i] for i in ids] == tag_words([w.split("q")[0] for w in sentence])
    dm.tokenizer = SimpleNamespace(state=lambda: {"kind": "wordpiece"})
    with pytest.raises(ValueError, match="aligns tags to the word-level tokenizer"):
        dm.val_dataloader()


def test_conll_format_aligns_a_word_of_several_tokens(tmp_path):
    for language in ("en", "de"):
        (tmp_path / language).mkdir()
        for split in ("train", "val", "test"):
            (tmp_path / language / f"{split}.txt").write_text(CONLL)
    cfg = TaggedCaptionsDataConfig(
        format="conll",
        root=str(tmp_path),
        source_language="en",
        target_language="de",
        batch_size=2,
        eval_batch_size=8,
    )
    dm = _module(cfg)
    assert dm.class_names["tags"] == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    batch = next(iter(dm.val_dataloader()))
    # <cls> eu rejects u . s . call: "U.S." is four tokens, its tag on the first
    assert batch["tags"][0].tolist() == [-1, 3, 0, 2, -1, -1, -1, 0]
    assert batch["label/language"].tolist() == [0, 0, 1, 1]


def test_words_cut_by_max_text_len_keep_their_gold_tags(tmp_path):
    for language in ("en", "de"):
        (tmp_path / language).mkdir()
        for split in ("train", "val", "test"):
            (tmp_path / language / f"{split}.txt").write_text(CONLL)
    cfg = TaggedCaptionsDataConfig(
        format="conll", root=str(tmp_path), source_language="en", target_language="de",
        batch_size=2, eval_batch_size=8, max_text_len=4,
    )  # fmt: skip
    batch = next(iter(_module(cfg).val_dataloader()))
    # <cls> eu rejects u: "U.S." starts inside the cut, "call" is cut off
    assert batch["tags"][0].tolist() == [-1, 3, 0, 2]
    assert batch["word_tags"][0].tolist() == [3, 0, 2, 0]  # every word's gold tag
    assert batch["word_tags"][1].tolist() == [5, -1, -1, -1]  # "Peter", then padding
