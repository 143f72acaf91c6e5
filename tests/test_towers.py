"""Towers and tokenizer: shapes, masks, padding invariance, round trips."""

from __future__ import annotations

import pytest
import torch

from modules.towers import TowerContext, build_tower
from modules.towers.audio import AudioCNNConfig
from modules.towers.image import CNNConfig, ViTConfig
from modules.towers.text import TextTransformerConfig
from modules.towers.tokenizer import SPECIALS, WordTokenizer
from modules.towers.video import FramesConfig

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


def _frames_tower(temporal: str, motion: bool = True) -> torch.nn.Module:
    cfg = FramesConfig(
        frame={"name": "cnn", "channels": [8, 16]},
        temporal=temporal,
        motion=motion,
        width=32,
        depth=1,
        heads=2,
    )
    return build_tower(cfg, 24, TowerContext(image_size=16, in_channels=1, num_frames=6)).eval()


@pytest.mark.parametrize(
    ("temporal", "motion", "order_sensitive"),
    [
        ("transformer", False, True),
        ("transformer", True, True),
        ("mean", False, False),
        ("mean", True, True),
    ],
)
def test_video_tower_sees_frame_order_through_time_embeddings_or_motion(
    temporal, motion, order_sensitive
):
    torch.manual_seed(0)
    video = torch.randn(2, 6, 1, 16, 16)
    tower = _frames_tower(temporal, motion)
    out = tower({"video": video})
    assert out.pooled.shape == (2, 24) and out.tokens.shape == (2, 6, 24)
    changed = not torch.allclose(tower({"video": video.flip(1)}).pooled, out.pooled, atol=1e-5)
    assert changed == order_sensitive


def test_video_tower_rejects_bad_input_and_config():
    tower = _frames_tower("transformer")
    with pytest.raises(ValueError, match=r"\[B, T, C, H, W\]"):
        tower({"video": torch.randn(2, 1, 16, 16)})
    with pytest.raises(ValueError, match="7 frames"):
        tower({"video": torch.randn(1, 7, 1, 16, 16)})
    with pytest.raises(ValueError, match="temporal"):
        FramesConfig(temporal="lstm")
    with pytest.raises(ValueError, match="frame.name: 'transformer' is not an image tower"):
        FramesConfig(frame={"name": "transformer"})
    with pytest.raises(ValueError, match="frame.channelz"):
        FramesConfig(frame={"name": "cnn", "channelz": [8]})


def test_audio_tower_shapes_and_loudness_invariance():
    torch.manual_seed(0)
    tower = build_tower(AudioCNNConfig(channels=[8, 16]), 24, TowerContext(n_mels=16)).eval()
    spec = torch.randn(3, 16, 40)
    out = tower({"audio": spec})
    assert out.pooled.shape == (3, 24) and out.tokens.shape == (3, 4 * 10, 24)
    # a louder recording shifts the log-mel by a constant: normalised input ignores it
    torch.testing.assert_close(tower({"audio": spec + 3.0}).pooled, out.pooled)
    with pytest.raises(ValueError, match="n_mels, frames"):
        tower({"audio": spec[:, None]})
    out.pooled.sum().backward()
    assert all(p.grad is not None for p in tower.parameters())
