"""The definitions family: the dictionary readers (GCIDE JSON, word-definition TSV) with their
one-line errors, the generated dictionary in the sentences family's language, and batches of
definitions with STS pairs (the sentences family's own) to evaluate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datamodules.definitions import DefinitionsDataConfig, DefinitionsDataModule
from datamodules.embedded.definitions import DefinitionsConfig, definition_records
from datamodules.embedded.sentences import vocabulary
from datamodules.errors import DataError
from datamodules.formats.dictionary import read_dictionary
from datamodules.sentences import SentencesDataConfig, SentencesDataModule
from modules.towers import build_tokenizer
from modules.words import split_words

GCIDE = {
    "abandon": {
        "entry": "abandon",
        "pos": [
            {"definitions": [{"text": "To give up wholly."}, {"text": "To forsake."}]},
            {"definitions": [{"text": "Abandonment."}]},
        ],
    },
    "ice cream": {"entry": "ice cream", "pos": [{"definitions": [{"text": "A frozen food."}]}]},
}


def test_gcide_json_gives_every_definition_of_every_part_of_speech(tmp_path):
    path = tmp_path / "gcide.json"
    path.write_text(json.dumps(GCIDE, indent=1), encoding="utf-8")
    assert read_dictionary(path) == [
        ("abandon", "To give up wholly."),
        ("abandon", "To forsake."),
        ("abandon", "Abandonment."),
        ("ice cream", "A frozen food."),  # a multi-word entry
    ]


def test_gcide_malformed_entry_names_file_and_line(tmp_path):
    path = tmp_path / "gcide.json"
    bad = {**GCIDE, "zebra": {"entry": "zebra", "pos": [{"definitions": [{"txt": "A horse."}]}]}}
    path.write_text(json.dumps(bad, indent=1), encoding="utf-8")
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if '"zebra":' in t)
    with pytest.raises(DataError, match=f"^{path}:{line}: entry 'zebra' is malformed"):
        read_dictionary(path)
    path.write_text('{"a": {"entry": "a",\n "pos": [}', encoding="utf-8")
    with pytest.raises(DataError, match=f"^{path}:2: not JSON"):
        read_dictionary(path)


def test_tsv_with_the_defsent_plus_separator_and_a_malformed_line(tmp_path):
    path = tmp_path / "wordnet.tsv"
    path.write_text(
        "dog\ta domesticated canid<|list_more_def|>a contemptible person\n\n"
        "hot dog\ta sausage in a bun\n",
        encoding="utf-8",
    )
    assert read_dictionary(path) == [
        ("dog", "a domesticated canid"),
        ("dog", "a contemptible person"),
        ("hot dog", "a sausage in a bun"),
    ]
    path.write_text("dog\ta canid\ncat a feline\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"^{path}:2: expected 'entry<TAB>definition'"):
        read_dictionary(path)
    path.write_text("dog\ta canid<|list_more_def|> \n", encoding="utf-8")
    with pytest.raises(DataError, match=f"^{path}:1: entry 'dog' has an empty definition"):
        read_dictionary(path)


def test_generated_definitions_write_their_entrys_meaning_in_the_sentences_language():
    cfg = DefinitionsConfig(num_entries=30, definitions_per_entry=3, seed=0)
    records = definition_records(cfg, np.random.default_rng(0))
    assert len(records) == 90 and len({r["entry"] for r in records}) == 30
    words = set(vocabulary())
    assert all(set(split_words(r["definition"])) <= words for r in records)
    by_entry: dict[int, list[str]] = {}
    for r in records:
        by_entry.setdefault(r["entry_id"], []).append(r["definition"])
    # an entry's definitions are different writings of one meaning, not copies
    assert sum(len(set(d)) > 1 for d in by_entry.values()) >= 25
    assert records == definition_records(cfg, np.random.default_rng(0))
    with pytest.raises(ValueError, match="definitions_per_entry"):
        DefinitionsConfig(definitions_per_entry=0)


def datamodule(tmp_path, **fields) -> DefinitionsDataModule:
    cfg = DefinitionsDataConfig(
        num_train=20, num_val=12, num_test=12, batch_size=8, cache_dir=str(tmp_path), **fields
    )
    dm = DefinitionsDataModule(cfg)
    dm.prepare_data()
    dm.setup()
    dm.tokenizer = build_tokenizer({"name": "transformer"}, dm.training_texts(), 32)
    return dm


def test_batches_of_definitions_and_the_sentences_familys_sts_pairs(tmp_path):
    dm = datamodule(tmp_path)
    assert dm.labels == {"entry": 20, "domain": 4} and len(dm.datasets["train"]) == 80
    batch = next(iter(dm.train_dataloader()))
    assert {"text_ids", "label/entry", "label/domain", "item_id"} <= set(batch)
    assert (batch["item_id"] == batch["label/entry"]).all()
    pairs = dm.source.split("test")
    sentences = SentencesDataModule(
        SentencesDataConfig(num_train=5, num_val=12, num_test=12, cache_dir=str(tmp_path))
    )
    sentences.prepare_data()
    assert pairs.texts == sentences.source.split("test").texts
    test = next(iter(dm.test_dataloader()))
    assert {"text_ids", "text@1_ids", "target/score", "label/paraphrase"} <= set(test)


def test_files_format(tmp_path):
    (tmp_path / "dict.tsv").write_text(
        "cat\ta small feline<|list_more_def|>a jazz musician\ndog\ta canid\n", encoding="utf-8"
    )
    (tmp_path / "sts.tsv").write_text(
        "sentence1\tsentence2\tscore\na small cat .\ta dog .\t1.0\n", encoding="utf-8"
    )
    dm = datamodule(
        tmp_path,
        format="files",
        root=str(tmp_path),
        train_file="dict.tsv",
        val_file="sts.tsv",
        test_file="sts.tsv",
    )
    assert dm.class_names == {"entry": ["cat", "dog"]} and len(dm.datasets["train"]) == 3
    assert dm.source.split("train").labels["entry"].tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match="data.val_file: required"):
        DefinitionsDataConfig(format="files", root=str(tmp_path), train_file="dict.tsv")
