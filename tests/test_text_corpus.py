"""The text_corpus family (datamodules/text_corpus.py): built-in documents are a scene's five
captions; plain text files are read one document per line; bad files are one-line errors."""

from __future__ import annotations

import pytest

from datamodules.errors import DataError
from datamodules.sources.text_corpus import scene_document
from datamodules.text_corpus import TextCorpusDataConfig, TextCorpusDataModule
from tests.tiny_modules import setup_with_words


def test_a_scene_document_is_its_captions_as_sentences():
    assert scene_document(["a red circle", "there is a circle"]) == (
        "a red circle . there is a circle ."
    )


def test_the_built_in_documents_batch_as_text(tmp_path):
    cfg = TextCorpusDataConfig(
        num_train=8,
        num_val=4,
        num_test=4,
        batch_size=4,
        eval_batch_size=4,
        image_size=24,
        cache_dir=str(tmp_path),
    )
    data = setup_with_words(TextCorpusDataModule(cfg))
    data.prepare_data()
    texts = data.training_texts()
    assert len(texts) == 8 and all(t.count(" .") == 5 and t.endswith(" .") for t in texts)
    batch = next(iter(data.test_dataloader()))
    assert set(batch) >= {"text_ids", "text_mask", "index", "item_id"}
    assert batch["text_ids"].shape[0] == 4 and "image" not in batch
    assert data.tower_context() == {"max_text_len": 64}


def write_corpus(root, train: str) -> None:
    root.mkdir()
    (root / "train.txt").write_text(train)
    (root / "val.txt").write_text("the cat sat\n")
    (root / "test.txt").write_text("a dog ran far\n\nthe cat ran\n")


def test_text_lines_are_documents(tmp_path):
    write_corpus(tmp_path / "corpus", "the cat sat on the mat\na dog ran\n")
    cfg = TextCorpusDataConfig(
        format="text_lines", root=str(tmp_path / "corpus"), batch_size=2, eval_batch_size=8
    )
    data = setup_with_words(TextCorpusDataModule(cfg))
    assert data.training_texts() == ["the cat sat on the mat", "a dog ran"]
    assert data.num_items("test") == 2  # the blank line is skipped
    batch = next(iter(data.train_dataloader()))
    assert batch["text_ids"].shape[0] == 2


def test_a_corpus_that_is_not_utf8_is_a_one_line_error_naming_the_file(tmp_path):
    root = tmp_path / "corpus"
    write_corpus(root, "fine\n")
    (root / "train.txt").write_bytes(b"the cat\n\xff\xfe broken\n")
    cfg = TextCorpusDataConfig(format="text_lines", root=str(root))
    with pytest.raises(DataError) as err:
        TextCorpusDataModule(cfg).setup("fit")
    assert "train.txt" in str(err.value) and "\n" not in str(err.value)


def test_text_lines_need_a_root():
    with pytest.raises(ValueError, match="data.root"):
        TextCorpusDataConfig(format="text_lines")
