"""The sentences family: the generated language, the public-format readers, batches of views
of text and STS pairs, and the base encoding views of text."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from datamodules.embedded.sentences import (
    FACTORS,
    Meaning,
    change,
    random_meaning,
    random_surface,
    realise,
    sts_record,
    training_record,
    vocabulary,
)
from datamodules.errors import DataError
from datamodules.formats.sentence_pairs import read_nli_jsonl, read_sts_tsv
from datamodules.formats.text_lines import read_text_lines
from datamodules.sentences import SentencesDataConfig, SentencesDataModule
from modules.towers import build_tokenizer
from modules.words import split_words


def test_meanings_share_factors_as_scored():
    rng = np.random.default_rng(0)
    for _ in range(50):
        first = random_meaning(rng)
        k = int(rng.integers(6))
        second = change(first, list(FACTORS[k:]), rng)
        assert first.shared(second) == k and second.domain == first.domain


def test_training_forms_keep_or_change_the_meaning():
    rng = np.random.default_rng(1)
    words = set(vocabulary())
    for _ in range(30):
        record = training_record(rng)
        texts = [record[k] for k in ("sentence", "paraphrase", "entailment", "contradiction")]
        assert all(set(split_words(t)) <= words for t in texts)
        # the contradiction keeps the premise's template and synonyms: one or two words differ
        premise, contradiction = split_words(texts[0]), split_words(texts[3])
        assert premise != contradiction and len(set(premise) ^ set(contradiction)) <= 6
        assert len(split_words(texts[2])) < len(premise) + 3


def test_paraphrases_often_share_few_words():
    """Synonyms and templates: two writings of one meaning are not near copies."""
    rng = np.random.default_rng(2)
    overlaps = []
    for _ in range(200):
        m = random_meaning(rng)
        a, b = (set(split_words(realise(m, random_surface(m, rng)))) for _ in range(2))
        overlaps.append(len(a & b) / len(a | b))
    assert np.mean(overlaps) < 0.6


def test_sts_scores_are_uniform_over_shared_factors():
    rng = np.random.default_rng(3)
    scores = np.array([sts_record(rng)["score"] for _ in range(600)])
    counts = np.bincount(scores.astype(int), minlength=6)
    assert set(scores) <= {0.0, 1.0, 2.0, 3.0, 4.0, 5.0} and counts.min() > 60


def test_meaning_ids_are_unique():
    ids = {
        Meaning(d, s, v, o, a, p).id()
        for d in range(4)
        for s in range(5)
        for v in range(5)
        for o in range(6)
        for a in range(8)
        for p in range(8)
    }
    assert len(ids) == 4 * 5 * 5 * 6 * 8 * 8


# -- readers -----------------------------------------------------------------------------------


def test_sts_readers(tmp_path):
    stsb = tmp_path / "sts-dev.csv"
    stsb.write_text(
        'main-captions\tMSRvid\t2012test\t0000\t5.000\tA man plays "a" flute.\t'
        "A man plays a flute.\n"
        "main-news\tnews\t2012\t0001\t1.5\tOne.\tTwo.\textra\tcolumns\n",
        encoding="utf-8",
    )
    assert read_sts_tsv(stsb) == [
        ('A man plays "a" flute.', "A man plays a flute.", 5.0),
        ("One.", "Two.", 1.5),
    ]
    glue = tmp_path / "dev.tsv"
    glue.write_text(
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tg\tf\t2012\t1\ts\ts\tA b.\tC d.\t3.2\n",
        encoding="utf-8",
    )
    assert read_sts_tsv(glue) == [("A b.", "C d.", 3.2)]
    sick = tmp_path / "SICK_test_annotated.txt"
    sick.write_text(
        "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
        "1\tA dog runs.\tA dog is running.\t4.5\tENTAILMENT\n",
        encoding="utf-8",
    )
    assert read_sts_tsv(sick) == [("A dog runs.", "A dog is running.", 4.5)]


def test_sick_release_is_split_by_its_semeval_set(tmp_path):
    """SICK.txt holds train, trial and test in one file: each split reads its own rows."""
    header = (
        "pair_ID\tsentence_A\tsentence_B\tentailment_label\trelatedness_score\t"
        "entailment_AB\tentailment_BA\tsentence_A_original\tsentence_B_original\t"
        "sentence_A_dataset\tsentence_B_dataset\tSemEval_set\n"
    )
    rows = [
        f"{k}\tA{k}.\tB{k}.\tNEUTRAL\t{k}.0\tA_neutral_B\tB_neutral_A\ta\tb\tFLICKR\tFLICKR\t{s}\n"
        for k, s in enumerate(["TRAIN", "TRIAL", "TEST", "TEST"], start=1)
    ]
    path = tmp_path / "SICK.txt"
    path.write_text(header + "".join(rows), encoding="utf-8")
    assert read_sts_tsv(path, "train") == [("A1.", "B1.", 1.0)]
    assert read_sts_tsv(path, "val") == [("A2.", "B2.", 2.0)]
    assert read_sts_tsv(path, "test") == [("A3.", "B3.", 3.0), ("A4.", "B4.", 4.0)]


def test_a_glue_test_file_without_scores_is_refused(tmp_path):
    path = tmp_path / "test.tsv"
    path.write_text("index\tsentence1\tsentence2\n0\tA.\tB.\n", encoding="utf-8")
    with pytest.raises(DataError, match="no score column"):
        read_sts_tsv(path)


@pytest.mark.parametrize(
    "line, message",
    [
        ("g\tf\t2012\t1\tfive\tA.\tB.", "score 'five' is not a number"),
        ("g\tf\t2012\t1\t2.0\tA.", "columns"),
        ("g\tf\t2012\t1\t2.0\t \tB.", "empty sentence"),
        ("g\tf\t2012\t1\tnan\tA.\tB.", "finite"),
    ],
)
def test_sts_reader_names_the_bad_line(tmp_path, line, message):
    path = tmp_path / "sts.csv"
    path.write_text("g\tf\t2012\t0\t1.0\tA.\tB.\n" + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"{path}:2: .*{message}"):
        read_sts_tsv(path)


def test_nli_reader_builds_simcse_triples(tmp_path):
    rows = [
        {"sentence1": "P1", "sentence2": "E1", "gold_label": "entailment"},
        {"sentence1": "P1", "sentence2": "N1", "gold_label": "neutral"},
        {"sentence1": "P1", "sentence2": "C1", "gold_label": "contradiction"},
        {"sentence1": "P2", "sentence2": "E2", "gold_label": "entailment"},  # no contradiction
        {"sentence1": "P3", "sentence2": "C3", "gold_label": "contradiction"},
        {"sentence1": "P3", "sentence2": "X3", "gold_label": "-"},
        {"sentence1": "P3", "sentence2": "E3", "gold_label": "entailment"},
    ]
    path = tmp_path / "snli.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    assert read_nli_jsonl(path) == [("P1", "E1", "C1"), ("P3", "E3", "C3")]
    # every entailment of a premise with a contradiction makes a triple, contradictions in turn
    more = rows[:3] + [{"sentence1": "P1", "sentence2": "E1b", "gold_label": "entailment"}]
    path.write_text("\n".join(json.dumps(r) for r in more), encoding="utf-8")
    assert read_nli_jsonl(path) == [("P1", "E1", "C1"), ("P1", "E1b", "C1")]
    path.write_text(json.dumps(rows[0]) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"{path}:2: invalid JSON"):
        read_nli_jsonl(path)
    path.write_text(json.dumps({"sentence1": "P"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"{path}:1: missing field"):
        read_nli_jsonl(path)


def test_text_lines(tmp_path):
    path = tmp_path / "wiki1m.txt"
    path.write_bytes("\ufeffFirst sentence.\n\n  Second one.  \n".encode())
    assert read_text_lines(path) == ["First sentence.", "Second one."]
    path.write_text("\n \n", encoding="utf-8")
    with pytest.raises(DataError, match="no line of text"):
        read_text_lines(path)
    path.write_bytes(b"caf\xe9\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_text_lines(path)


# -- the datamodule ----------------------------------------------------------------------------


def datamodule(tmp_path, **fields) -> SentencesDataModule:
    cfg = SentencesDataConfig(
        num_train=40, num_val=12, num_test=12, batch_size=8, cache_dir=str(tmp_path), **fields
    )
    dm = SentencesDataModule(cfg)
    dm.prepare_data()
    dm.setup()
    dm.tokenizer = build_tokenizer({"name": "transformer"}, dm.training_texts(), 32)
    return dm


def test_unsupervised_batches_repeat_each_sentence(tmp_path):
    dm = datamodule(tmp_path)
    assert dm.views == {"text": 2} and dm.labels == {"domain": 4}
    batch = next(iter(dm.train_dataloader()))
    assert torch.equal(batch["text@0_ids"], batch["text@1_ids"])
    assert batch["text@0_ids"].shape[0] == 8 and batch["label/domain"].shape == (8,)


def test_nli_batches_and_sts_pairs(tmp_path):
    dm = datamodule(tmp_path, train="nli")
    assert dm.views == {"text": 3}
    batch = next(iter(dm.train_dataloader()))
    assert {"text@0_ids", "text@1_ids", "text@2_ids", "text@2_mask"} <= set(batch)
    assert not torch.equal(batch["text@0_ids"], batch["text@2_ids"])
    pairs = next(iter(dm.test_dataloader()))
    assert {"text_ids", "text@1_ids", "target/score", "label/paraphrase"} <= set(pairs)
    assert pairs["target/score"].dtype == torch.float32
    assert torch.equal(pairs["label/paraphrase"], (pairs["target/score"] == 5).long())


def test_paraphrase_nli_triples_are_paraphrase_and_contradiction(tmp_path):
    dm = datamodule(tmp_path, train="paraphrase_nli")
    assert dm.views == {"text": 3}
    texts = dm.source.split("train").texts
    for i in range(5):
        sample = dm.datasets["train"][i]
        assert sample["text@0"] == texts["sentence"][i]
        assert sample["text@1"] == texts["paraphrase"][i] != texts["entailment"][i]
        assert sample["text@2"] == texts["contradiction"][i]
    assert {"text@0_ids", "text@1_ids", "text@2_ids"} <= set(next(iter(dm.train_dataloader())))
    # from an NLI file: the entailment is the paraphrase
    row = {"sentence1": "a cat sat .", "sentence2": "a cat rested .", "gold_label": "entailment"}
    rows = [row, {**row, "sentence2": "a dog sat .", "gold_label": "contradiction"}]
    (tmp_path / "nli.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    (tmp_path / "sts.tsv").write_text(
        "sentence1\tsentence2\tscore\na cat sat .\ta dog ran .\t1.0\n", encoding="utf-8"
    )
    files = dict(format="files", root=str(tmp_path), val_file="sts.tsv", test_file="sts.tsv")
    dm = datamodule(tmp_path, **files, train_file="nli.jsonl", train="paraphrase_nli")
    sample = dm.datasets["train"][0]
    triple = [sample[f"text@{v}"] for v in range(3)]
    assert triple == ["a cat sat .", "a cat rested .", "a dog sat ."]


def test_files_format(tmp_path):
    (tmp_path / "wiki.txt").write_text("a cat sat .\na dog ran .\n" * 8, encoding="utf-8")
    (tmp_path / "sts.tsv").write_text(
        "sentence1\tsentence2\tscore\na cat sat .\ta dog ran .\t1.0\n", encoding="utf-8"
    )
    files = dict(format="files", root=str(tmp_path), train_file="wiki.txt")
    dm = datamodule(tmp_path, **files, val_file="sts.tsv", test_file="sts.tsv")
    assert dm.labels == {} and len(dm.datasets["train"]) == 16
    with pytest.raises(ValueError, match="does not fit"):
        SentencesDataConfig(**files, val_file="sts.tsv", test_file="sts.tsv", train="nli")
    with pytest.raises(ValueError, match="data.val_file: required"):
        SentencesDataConfig(**files, test_file="sts.tsv")
