"""GRAM module: the volume objective is gram_loss on the normalised embeddings (anchor text
against the tuple of the others, tau a plain divisor), the baseline the mean CLIP loss over the
anchor's pairs; both are invariant to the order of the non-anchor modalities; tau stays a
positive divisor after optimiser steps; both objectives ask for volume retrieval."""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from modules.base import Temperature
from modules.gram import GRAM
from modules.losses.contrastive import clip_loss
from modules.losses.gram import gram_loss
from modules.towers.tokenizer import WordTokenizer
from tests.tiny_modules import MODEL, OPTIM, word_state

VOCAB = WordTokenizer.build(["a red circle", "a blue square left of it"]).vocab
CAPTIONS = ["a red circle", "a blue square", "a red square", "left of it", "a blue circle"]
AUDIO = {"name": "audio_cnn", "channels": [8, 16]}
CONTEXT = {"image_size": 16, "max_text_len": 8, "n_mels": 8, "audio_frames": 12}


def module(modalities=("image", "audio", "text"), seed: int = 0, **method: Any) -> GRAM:
    torch.manual_seed(seed)
    return GRAM(
        method={"name": "gram", **method},
        model={**MODEL, "audio": AUDIO, "echo": {**AUDIO, "key": "echo"}},
        optim=OPTIM,
        tokenizer=word_state(VOCAB),
        context={"modalities": list(modalities), **CONTEXT},
    )


def batch(size: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids, mask = WordTokenizer(VOCAB, max_len=8).encode(CAPTIONS[:size])
    return {
        "image": torch.randn(size, 3, 16, 16, generator=g),
        "audio": torch.randn(size, 8, 12, generator=g),
        "text_ids": ids,
        "text_mask": mask,
        "index": torch.arange(size),
        "item_id": torch.tensor([0, 1, 2, 2, 3][:size]),  # two captions of item 2
    }


def normalised(gram: GRAM, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each tower's pooled output, L2-normalised, computed outside the module's hooks."""
    return {m: F.normalize(gram.towers[m](b).pooled, dim=-1) for m in gram.modalities}


def test_volume_loss_is_gram_loss_of_the_anchor_against_the_others():
    gram = module(tau=0.1, eps=1e-8)
    with torch.no_grad():
        gram.tau.value.fill_(0.13)  # a learnt value: the loss reads the parameter as is
    b = batch()
    emb = normalised(gram, b)
    got = gram.losses(b, gram.encode(b))
    assert set(got) == {"volume"}
    want = gram_loss(emb["text"], [emb["image"], emb["audio"]], 0.13, 0.1, b["item_id"], 1e-8)
    torch.testing.assert_close(got["volume"], want)
    plain_tau = gram_loss(emb["text"], [emb["image"], emb["audio"]], 0.13, 0.1, None, 1e-8)
    assert not torch.allclose(got["volume"], plain_tau)  # item 2's captions are positives


def test_tau_is_a_plain_divisor_parameter_with_a_gradient():
    gram = module()
    assert isinstance(gram.tau, Temperature)  # so the base clamps it after every step
    assert gram.tau.value.item() == pytest.approx(0.07)
    assert not gram.temperature.log_scale.requires_grad  # the CLIP temperature is unused
    b = batch()
    loss = gram.losses(b, gram.encode(b))["volume"]
    (grad,) = torch.autograd.grad(loss, gram.tau.value)
    emb = {k: v.detach() for k, v in normalised(gram, b).items()}
    tau = torch.tensor(0.07, requires_grad=True)
    gram_loss(emb["text"], [emb["image"], emb["audio"]], tau, 0.1, b["item_id"]).backward()
    torch.testing.assert_close(grad, tau.grad)
    torch.testing.assert_close(gram.scalars({})["tau"], gram.tau.value)


def test_anchored_pairwise_is_the_mean_clip_loss_of_the_anchor_pairs():
    gram = module(objective="anchored_pairwise")
    assert gram.tau is None and gram.temperature.log_scale.requires_grad
    b = batch()
    emb = normalised(gram, b)
    got = gram.losses(b, gram.encode(b))
    assert set(got) == {"anchored_pairwise"}
    pairs = [
        clip_loss(emb["text"], emb[m], gram.scale, ids=b["item_id"], label_smoothing=0.1)
        for m in ("image", "audio")
    ]
    torch.testing.assert_close(got["anchored_pairwise"], (pairs[0] + pairs[1]) / 2)
    torch.testing.assert_close(gram.scalars({})["tau"], 1 / gram.scale)


@pytest.mark.parametrize("objective", ["volume", "anchored_pairwise"])
def test_the_order_of_the_other_modalities_does_not_change_the_loss(objective):
    first = module(("image", "audio", "text"), objective=objective)
    for order in (("audio", "image", "text"), ("text", "audio", "image")):
        other = module(order, seed=1, objective=objective)
        other.load_state_dict(first.state_dict())
        b = batch()
        want = first.losses(b, first.encode(b))[objective]
        got = other.losses(b, other.encode(b))[objective]
        torch.testing.assert_close(got, want)


def test_four_modalities_take_a_four_vector_volume():
    gram = module(("image", "audio", "echo", "text"))
    b = batch()
    b["echo"] = b["audio"].flip(0)
    outputs = gram.encode(b)
    emb = normalised(gram, b)
    want = gram_loss(
        emb["text"], [emb["image"], emb["audio"], emb["echo"]], 0.07, 0.1, b["item_id"]
    )
    torch.testing.assert_close(gram.losses(b, outputs)["volume"], want)


def test_needs_three_modalities_and_the_anchor():
    with pytest.raises(ValueError, match="at least 3"):
        module(("image", "text"))
    with pytest.raises(ValueError, match="method.anchor 'text'"):
        module(("image", "audio", "echo"))
    with pytest.raises(ValueError, match="objective"):
        module(objective="pairwise")
    with pytest.raises(ValueError, match="tau"):
        module(tau=0.0)


@pytest.mark.parametrize("objective", ["volume", "anchored_pairwise"])
def test_both_objectives_are_scored_by_volume_retrieval(objective):
    gram = module(objective=objective, anchor="audio")
    assert gram.evaluators() == {"volume_retrieval": {"anchor": "audio"}}


def test_optimiser_steps_keep_tau_a_positive_divisor():
    gram = module()
    with torch.no_grad():
        gram.tau.value.fill_(1e-4)  # below 1 / max_logit_scale, as a run of sign-stable steps
    trainer = L.Trainer(
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(gram, DataLoader([batch(seed=i) for i in range(2)], batch_size=None))
    assert 1 / MODEL["max_logit_scale"] <= gram.tau.value.item() <= 1.0
    with torch.no_grad():
        gram.tau.value.fill_(-0.5)
    gram.tau.clamp_()
    assert gram.tau.value.item() == pytest.approx(1 / MODEL["max_logit_scale"])
