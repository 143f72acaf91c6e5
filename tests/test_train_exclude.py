"""data.train_exclude: the training split leaves out the items of chosen classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.errors import DataError
from datamodules.image_text import ImageTextDataConfig, ImageTextDataModule
from tests.tiny_modules import setup_with_words

SMALL = dict(num_train=120, num_val=20, num_test=20, image_size=24, batch_size=8)


def datamodule(tmp_path, **kwargs) -> ImageTextDataModule:
    dm = ImageTextDataModule(ImageTextDataConfig(cache_dir=str(tmp_path), **SMALL, **kwargs))
    dm.prepare_data()
    setup_with_words(dm, "fit")
    return dm


def test_excluded_classes_leave_the_training_split_only(tmp_path):
    full = datamodule(tmp_path)
    cut = datamodule(tmp_path, train_exclude={"color": ["red", "blue"], "shape": ["star"]})
    colors, shapes = full.class_names["color"], full.class_names["shape"]
    out = {colors.index("red"), colors.index("blue")}
    labels = full.datasets["train"].labels
    dropped = np.isin(labels["color"], list(out)) | (labels["shape"] == shapes.index("star"))
    assert 0 < dropped.sum() < len(dropped)
    assert cut.num_items("train") == len(dropped) - dropped.sum()
    assert cut.num_items("val") == full.num_items("val")
    kept = np.flatnonzero(~dropped)
    first, last = kept[0], kept[-1]
    for new, old in ((0, first), (len(kept) - 1, last)):  # renumbered in order, same content
        a, b = cut.datasets["train"].load(new), full.datasets["train"].load(int(old))
        assert torch.equal(a["image"], b["image"])
    batch = next(iter(cut.train_dataloader()))
    assert not torch.isin(batch["label/color"], torch.tensor(sorted(out))).any()
    assert not (batch["label/shape"] == shapes.index("star")).any()
    texts = cut.datasets["train"].captions
    old_texts = full.datasets["train"].captions
    o = old_texts.offsets
    assert (
        texts.all_texts()[: o[first + 1] - o[first]]
        == old_texts.all_texts()[o[first] : o[first + 1]]
    )


def test_unknown_labels_or_classes_are_one_line_errors(tmp_path):
    """Data errors (run.py: one line, exit 2): the labels are known once the data is read."""
    with pytest.raises(DataError, match="no named label 'size'"):
        datamodule(tmp_path, train_exclude={"size": ["big"]})
    with pytest.raises(DataError, match=r"color has no classes \['mauve'\]"):
        datamodule(tmp_path, train_exclude={"color": ["mauve"]})
