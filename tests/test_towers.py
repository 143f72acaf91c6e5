"""Towers and tokenizer: shapes, masks, padding invariance, round trips."""

from __future__ import annotations

import pytest
import torch

from modules.towers import TowerContext, build_tower
from modules.towers.image import CNNConfig, ViTConfig
from modules.towers.text import TextTransformerConfig
from modules.towers.tokenizer import SPECIALS, WordTokenizer

CAPTIONS = ["A red circle left of a blue square.", "two green triangles", "a red square"]


def test_tokenizer_vocab_encode_decode():
    tok = WordTokenizer.build(CAPTIONS, max_len=8)
    assert tok.vocab[:3] == list(SPECIALS)
    assert tok.vocab[3:] == sorted(tok.vocab[3:])
    ids, mask = tok.encode(["a red circle", "purple circle"])
    assert ids.shape == mask.shape == (2, 4)  # padded to the longest row: <cls> a red circle
    assert ids[0, 0].item() == tok.vocab.index("<cls>")
    assert mask.tolist() == [[True] * 4, [True] * 3 + [False]]
    assert tok.decode(ids) == ["a red circle", "circle"]
    assert ids[1, 1].item() == tok.vocab.index("<unk>")
    long_ids, long_mask = tok.encode(["a " * 50])
    assert long_mask.all() and long_ids.shape == (1, 8)


def test_tokenizer_rejects_bad_vocab():
    with pytest.raises(ValueError, match="must start with"):
        WordTokenizer(["a", "b"])


@pytest.mark.parametrize(
    ("cfg", "num_tokens"),
    [(CNNConfig(channels=[8, 16]), 64), (ViTConfig(patch_size=8, width=32, depth=1, heads=2), 16)],
)
def test_image_towers_return_pooled_and_tokens(cfg, num_tokens):
    tower = build_tower(cfg, 24, TowerContext(image_size=32))
    out = tower({"image": torch.randn(3, 3, 32, 32)})
    assert out.pooled.shape == (3, 24)
    assert out.tokens.shape == (3, num_tokens, 24)  # CNN: 8x8 map after two halvings; ViT: 4x4
    out.pooled.sum().backward()
    assert all(p.grad is not None for p in tower.parameters())


def test_vit_patch_size_must_divide_image():
    with pytest.raises(ValueError, match="patch_size"):
        build_tower(ViTConfig(patch_size=5), 8, TowerContext(image_size=32))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_text_tower_ignores_padding(pooling):
    torch.manual_seed(0)
    tok = WordTokenizer.build(CAPTIONS, max_len=12)
    tower = build_tower(
        TextTransformerConfig(width=32, depth=1, heads=2, pooling=pooling),
        16,
        TowerContext(vocab_size=len(tok), max_text_len=12),
    ).eval()
    short = dict(zip(("text_ids", "text_mask"), tok.encode(["a red circle"]), strict=True))
    padded = {k: torch.nn.functional.pad(v, (0, 6)) for k, v in short.items()}  # more padding
    a, b = tower(short), tower(padded)
    assert (
        a.pooled.shape == (1, 16) and a.tokens.shape == (1, 4, 16) and b.tokens.shape == (1, 10, 16)
    )
    torch.testing.assert_close(a.pooled, b.pooled, atol=1e-5, rtol=1e-5)
    other = dict(zip(("text_ids", "text_mask"), tok.encode(["a blue circle"]), strict=True))
    assert not torch.allclose(tower(other).pooled, a.pooled)
