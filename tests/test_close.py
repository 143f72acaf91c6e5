"""CLOSE: the Gaussian modality noise (train: unit norm and moved, eval: identity, per-dimension
sigma by the expected cosine); text-only training (the image tower never runs) of heads on
frozen towers that stay bit-identical; per-modality head accuracy logged in evaluation."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from callbacks.evaluation import EmbeddingMetrics
from modules.close import CLOSE, GaussianNoise
from modules.towers.tokenizer import WordTokenizer
from tests.tiny_modules import MODEL, OPTIM, tiny_batch, word_state

VOCAB = WordTokenizer.build(["a red circle", "a blue square left of it"]).vocab
CLASSES = {"shape": 3, "color": 2}


def unit(rows: int, dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=g, dtype=torch.float64), dim=-1)


def test_noise_in_train_mode_is_unit_norm_and_moves_the_input():
    torch.manual_seed(123)
    noise = GaussianNoise(0.1).train()
    x = unit(6, 16, seed=1)  # (seed 0 after manual_seed(0) would draw noise parallel to x)
    y = noise(x)
    torch.testing.assert_close(y.norm(dim=-1), torch.ones(6, dtype=torch.float64))
    assert not torch.allclose(y, x)
    assert not torch.allclose(noise(x), y)  # fresh noise each call


def test_noise_in_eval_mode_is_the_identity():
    noise = GaussianNoise(0.1).eval()
    x = 3 * unit(6, 16)  # not even renormalised
    assert noise(x) is x


def test_sigma_is_per_dimension_by_the_expected_cosine():
    torch.manual_seed(0)
    d, sigma = 768, 0.04
    e = unit(1, d).float().expand(4000, d)
    cosine = (GaussianNoise(sigma).train()(e) * e).sum(-1).mean().item()
    assert cosine == pytest.approx(1 / math.sqrt(1 + d * sigma**2), abs=0.02)  # ~0.67
    assert cosine == pytest.approx(0.67, abs=0.02)  # sigma on the total norm would give ~1


def module(**method) -> CLOSE:
    torch.manual_seed(0)
    return CLOSE(
        method={"name": "close", "classes": CLASSES, "noise_std": 0.1, **method},
        model={**MODEL, "frozen": ["image", "text"], "learnable_temperature": False},
        optim={**OPTIM, "warmup_steps": 0},
        tokenizer=word_state(VOCAB),
        context={"modalities": ["image", "text"], "image_size": 16, "max_text_len": 8},
    )


def batch(size: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    return tiny_batch(
        VOCAB,
        ["a red circle", "a blue square", "a red square", "left of it"][:size],
        seed,
        **{
            "label/shape": torch.tensor([0, 1, 1, 2][:size]),
            "label/color": torch.tensor([0, 1, 0, 1][:size]),
        },
    )


def trainer(steps: int, callbacks: list | None = None) -> L.Trainer:
    return L.Trainer(
        callbacks=callbacks,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        limit_val_batches=2,
        num_sanity_val_steps=0,
    )


def test_training_never_runs_the_image_tower_and_leaves_frozen_towers_bit_identical():
    close = module()
    before = {k: v.clone() for k, v in close.towers.state_dict().items()}
    heads = {k: v.clone() for k, v in close.heads.state_dict().items()}
    scale = close.temperature.log_scale.detach().clone()

    def refuse(*args, **kwargs):
        raise AssertionError("the image tower ran during training")

    original = close.towers["image"].forward
    close.towers["image"].forward = refuse
    trainer(3).fit(close, DataLoader([batch(seed=i) for i in range(3)], batch_size=None))
    close.towers["image"].forward = original
    assert all(p.grad is None for p in close.towers.parameters())
    assert not any(p.requires_grad for p in close.towers.parameters())
    for name, value in close.towers.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert torch.equal(close.temperature.log_scale.detach(), scale)
    moved = [k for k, v in close.heads.state_dict().items() if not torch.equal(v, heads[k])]
    assert moved, "the heads should train"


def test_loss_is_the_mean_head_cross_entropy_on_noisy_text_and_clean_in_eval():
    close = module(hidden=None)
    b = batch()
    outputs = close.eval().encode(b)
    text = F.normalize(outputs["text"].pooled, dim=-1)
    want = torch.stack(
        [F.cross_entropy(close.heads[k](text), b[f"label/{k}"]) for k in CLASSES]
    ).mean()
    torch.testing.assert_close(close.losses(b, outputs)["ce"], want)
    close.train()
    assert set(close.encode(b)) == {"text"}
    torch.manual_seed(1)
    noisy = close.losses(b, outputs)["ce"]
    torch.manual_seed(1)
    noised = F.normalize(text + torch.randn_like(text) * 0.1, dim=-1)
    want = torch.stack(
        [F.cross_entropy(close.heads[k](noised), b[f"label/{k}"]) for k in CLASSES]
    ).mean()
    torch.testing.assert_close(noisy, want)


def test_evaluation_logs_head_accuracy_on_image_and_text_embeddings():
    close = module(noise_std=0.0)
    again = {
        **batch(),
        "label/shape": torch.tensor([2, 2, 0, 0]),
        "label/color": 1 - batch()["label/color"],
    }
    val = DataLoader([batch(), again], batch_size=None)  # same indices again: counted once
    metrics = trainer(1, [EmbeddingMetrics()]).validate(close, val, verbose=False)[0]
    b = batch()
    close.eval()
    with torch.no_grad():
        outputs = close.encode(b)
        for side in ("image", "text"):
            emb = F.normalize(outputs[side].pooled, dim=-1)
            for label in CLASSES:
                hits = close.heads[label](emb).argmax(-1) == b[f"label/{label}"]
                got = metrics[f"val/classifier/{side}/{label}/accuracy"]
                assert got == pytest.approx(100 * hits.float().mean().item())
    assert not any(key.startswith("accuracy") for key in close.state_dict())  # checkpoints


def test_config_rejects_bad_sigma_and_mismatched_class_counts():
    with pytest.raises(ValueError, match="noise_std"):
        module(noise_std=-0.1)

    with pytest.raises(ValueError, match="shape"):  # the data says 4 shapes, the method 3
        CLOSE(
            method={"name": "close", "classes": CLASSES},
            model={**MODEL, "frozen": ["image", "text"]},
            optim=OPTIM,
            tokenizer=word_state(VOCAB),
            context={"modalities": ["image", "text"], "labels": {"shape": 4}, "max_text_len": 8},
        )
