"""Captions that repeat word for word across items are counted and warned about once."""

from __future__ import annotations

import logging

from datamodules.pairs import warn_shared_captions
from datamodules.storage import Captions


def test_shared_captions_are_counted_across_items_not_within_one():
    captions = Captions.from_lists(
        [["A red circle", "a red  circle"], ["a red circle", "a blue square"], ["a green star"]]
    )
    # "a red circle" (any case or spacing) belongs to items 0 and 1: its three captions count;
    # item 0's two spellings alone would not
    assert captions.shared_across_items() == (3, "a red circle")
    alone = Captions.from_lists([["a red circle", "A red circle"], ["a blue square"]])
    assert alone.shared_across_items() == (0, None)


def test_warning_names_the_split_count_and_an_example(caplog):
    captions = Captions.from_lists([["a red circle"], ["a red circle"], ["a blue square"]])
    with caplog.at_level(logging.WARNING):
        warn_shared_captions("test", captions)
        warn_shared_captions("val", Captions.from_lists([["one"], ["two"]]))
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "test split: 2 of 3 captions" in message and "'a red circle'" in message
