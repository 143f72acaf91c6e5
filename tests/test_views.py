"""In-module views (modules/views.py): shapes, seeds, crops that zoom without flipping or
recolouring, and EDA text views that keep <cls>, at least one word and consistent padding."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from modules.towers.tokenizer import WordTokenizer
from modules.views import (
    STOP_WORDS,
    ImageViewConfig,
    TextViewConfig,
    image_view,
    random_resized_crop,
    stop_word_ids,
    text_view,
)

TEXTS = [
    "a red circle is to the left of the blue square",
    "there is a small green star in the top left corner",
    "two shapes: a pink cross above a yellow diamond",
    "there is a",  # stop words only
    "star",
    "",  # no word at all
]
TOKENIZER = WordTokenizer.build(TEXTS, max_len=16)
STOP_IDS = torch.tensor(stop_word_ids(TOKENIZER.vocab))


def encoded() -> tuple[torch.Tensor, torch.Tensor]:
    return TOKENIZER.encode(TEXTS)


def words(ids: torch.Tensor) -> list[list[int]]:
    """Word ids of each row (no <cls>, no padding)."""
    return [[i for i in row[1:].tolist() if i] for row in ids]


def test_stop_words_come_from_the_vocabulary_and_spare_meaningful_words():
    found = {TOKENIZER.vocab[i] for i in STOP_IDS.tolist()}
    assert found == STOP_WORDS & set(TOKENIZER.vocab)
    assert {"a", "the", "is", "of", "there"} <= found
    assert not {"left", "above", "top", "two", "red"} & found


def test_image_views_keep_shape_range_and_follow_the_seed():
    images = torch.rand(4, 3, 16, 16, dtype=torch.float64) * 2 - 1
    cfg = ImageViewConfig()
    torch.manual_seed(5)
    first = image_view(images, cfg)
    torch.manual_seed(5)
    again = image_view(images, cfg)
    other = image_view(images, cfg)
    assert first.shape == images.shape and first.dtype == images.dtype
    assert first.min() >= -1 and first.max() <= 1
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first, other)


def test_full_crop_is_the_identity_and_crops_zoom_without_flipping_or_recolouring():
    images = torch.rand(3, 3, 12, 12, dtype=torch.float64)
    whole = random_resized_crop(images, [1.0, 1.0], [1.0, 1.0])
    torch.testing.assert_close(whole, images)
    # a horizontal ramp: a crop of width w zooms the slope by 1/w, never reverses it
    ramp = torch.linspace(-1, 1, 32, dtype=torch.float64).expand(6, 3, 32, 32).clone()
    torch.manual_seed(0)
    out = random_resized_crop(ramp, [0.25, 0.25], [1.0, 1.0])  # square half-side crops
    slopes = out[..., 1:-1, 2:-2].diff(dim=-1)
    torch.testing.assert_close(slopes, torch.full_like(slopes, 0.5 * (2 / 31)))
    assert (out.diff(dim=-2).abs() < 1e-12).all()  # rows stay rows: no rotation or flip
    # a uniformly coloured image keeps its colour exactly when there is no noise
    colour = torch.tensor([0.8, -0.2, 0.1], dtype=torch.float64)
    flat = colour[None, :, None, None].expand(2, 3, 16, 16)
    view = image_view(flat, ImageViewConfig(crop_scale=[0.3, 1.0], noise_std=0.0))
    torch.testing.assert_close(view, flat.expand_as(view))


def check_well_formed(ids: torch.Tensor, mask: torch.Tensor, original: torch.Tensor) -> None:
    """Same shape, <cls> kept, padding exactly where the mask is False and at the end."""
    assert ids.shape == original.shape and mask.shape == original.shape
    assert mask.dtype == torch.bool
    assert torch.equal(ids[:, 0], original[:, 0])
    assert torch.equal(ids != 0, mask)
    assert not (mask[:, 1:] & ~mask[:, :-1]).any()  # a prefix of True, then False


@pytest.mark.parametrize(
    "cfg",
    [
        TextViewConfig(),
        TextViewConfig(stop_word_prob=1.0, op_weights=[0, 0, 1], deletion_prob=1.0),
        TextViewConfig(stop_word_prob=0.0, op_weights=[0, 1, 0]),
    ],
)
def test_text_views_are_well_formed_seeded_and_never_empty(cfg):
    ids, mask = encoded()
    for seed in range(20):
        torch.manual_seed(seed)
        view_ids, view_mask = text_view(ids, mask, STOP_IDS, cfg)
        check_well_formed(view_ids, view_mask, ids)
        for before, after in zip(words(ids), words(view_ids), strict=True):
            assert len(after) >= min(1, len(before))  # at least one real word remains
            assert not Counter(after) - Counter(before)  # only words of the caption
        torch.manual_seed(seed)
        again = text_view(ids, mask, STOP_IDS, cfg)
        assert torch.equal(again[0], view_ids) and torch.equal(again[1], view_mask)


def test_stop_word_removal_keeps_the_order_and_leaves_stop_word_captions_whole():
    ids, mask = encoded()
    cfg = TextViewConfig(stop_word_prob=1.0, op_weights=[1, 0, 0])
    view_ids, _ = text_view(ids, mask, STOP_IDS, cfg)
    stop = set(STOP_IDS.tolist())
    for before, after in zip(words(ids), words(view_ids), strict=True):
        content = [w for w in before if w not in stop]
        assert after == (content or before)


def test_deleting_every_word_keeps_exactly_one():
    ids, mask = encoded()
    cfg = TextViewConfig(stop_word_prob=0.0, op_weights=[0, 0, 1], deletion_prob=1.0)
    torch.manual_seed(1)
    view_ids, view_mask = text_view(ids, mask, STOP_IDS, cfg)
    check_well_formed(view_ids, view_mask, ids)
    assert [len(w) for w in words(view_ids)] == [1, 1, 1, 1, 1, 0]


def test_swap_exchanges_exactly_two_positions():
    ids, mask = encoded()
    cfg = TextViewConfig(stop_word_prob=0.0, op_weights=[0, 1, 0])
    torch.manual_seed(2)
    view_ids, view_mask = text_view(ids, mask, STOP_IDS, cfg)
    assert torch.equal(view_mask, mask)
    for before, after in zip(words(ids), words(view_ids), strict=True):
        assert sorted(after) == sorted(before)
        changed = sum(a != b for a, b in zip(before, after, strict=True))
        all_distinct = len(set(before)) == len(before) >= 2
        assert changed in ((2,) if all_distinct else (0, 2))
    assert not torch.equal(view_ids, ids)


def test_config_validation():
    with pytest.raises(ValueError, match="crop_scale"):
        ImageViewConfig(crop_scale=[0.0, 1.0])
    with pytest.raises(ValueError, match="op_weights"):
        TextViewConfig(op_weights=[0, 0, 0])
