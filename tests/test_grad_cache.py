"""Gradient caching (optim.micro_batch_size): the big contrastive batch's gradient exactly, one
micro-batch of activations at a time; plain gradient accumulation is shown to differ."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from modules.clip import CLIP
from modules.clip_refine import CLIPRefine
from modules.grad_cache import cached_backward, split_batch
from modules.towers.tokenizer import WordTokenizer
from tests.tiny_modules import tiny_module

TEXTS = ["a red circle", "a blue square", "a red square", "left of it", "a big blue circle"]
VOCAB = WordTokenizer.build(TEXTS).vocab
SIZE = 12
#: Items 0-3 have two captions each in the batch (multi-positive rows, across micro-batches).
ITEM_IDS = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7])


def make(method=None, cls=CLIP, text=None, **optim):
    torch.manual_seed(0)
    method = method or {"name": "clip", "label_smoothing": 0.1}
    return tiny_module(VOCAB, cls, method, text, **{"lr": 1e-2, "warmup_steps": 0, **optim})


def batch(seed: int = 0, dtype=torch.float64) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids, mask = WordTokenizer(VOCAB, max_len=8).encode([TEXTS[i % 5] for i in range(SIZE)])
    return {
        "image": torch.randn(SIZE, 3, 16, 16, generator=gen, dtype=dtype),
        "text_ids": ids,
        "text_mask": mask,
        "index": torch.arange(SIZE),
        "item_id": ITEM_IDS.clone(),
    }


def full_batch_grads(module, data) -> dict[str, torch.Tensor]:
    module.zero_grad()
    loss = module.total_loss(module.losses(data, module.encode(data)))
    loss.backward()
    return {name: p.grad.clone() for name, p in module.named_parameters() if p.requires_grad}


def cached_grads(module, data, micro: int) -> tuple[dict[str, torch.Tensor], list[bool]]:
    module.zero_grad()
    calls: list[bool] = []

    def backward(surrogate, last):
        calls.append(last)
        surrogate.backward()

    cached_backward(
        module.encode,
        lambda outputs: module.total_loss(module.losses(data, outputs)),
        [p for p in module.parameters() if p.requires_grad],
        data,
        micro,
        backward,
    )
    grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.requires_grad}
    return grads, calls


@pytest.mark.parametrize(
    "method",
    [
        {"name": "clip", "label_smoothing": 0.1},
        {"name": "clip", "chunk_elements": 5},  # cached outputs through the chunked loss
    ],
)
@pytest.mark.parametrize("micro", [1, 3, 4])
def test_cached_gradient_equals_the_big_batch_gradient(method, micro):
    module = make(method).double()
    data = batch()
    expected = full_batch_grads(module, data)
    got, calls = cached_grads(module, data, micro)
    assert calls == [False] * (SIZE // micro - 1) + [True]
    assert expected.keys() == got.keys() and "temperature.log_scale" in got
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-9, atol=1e-12, msg=name)


def test_cached_gradient_with_a_frozen_teacher_term():
    """CLIP-Refine reads teacher features (HyCD) and draws a random target (RaFA) inside its
    loss: still the big-batch gradient."""
    weights = {"clip": 0.5, "rafa": 1.0, "hycd": 1.0}
    module = make({"name": "clip_refine", "loss_weights": weights}, cls=CLIPRefine).double()
    module.set_teacher(
        {f"towers.{k}": v.clone() * 1.1 for k, v in module.towers.state_dict().items()}
    )
    data = batch(1)
    torch.manual_seed(3)
    expected = full_batch_grads(module, data)
    torch.manual_seed(3)
    got, _ = cached_grads(module, data, 4)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-9, atol=1e-12, msg=name)


def test_plain_gradient_accumulation_is_not_the_big_batch_gradient():
    """What the docs warn about: summing the gradients of three 4-sample contrastive losses
    (each sample sees only its micro-batch's negatives) differs from the 12-sample gradient."""
    module = make().double()
    data = batch()
    expected = full_batch_grads(module, data)
    module.zero_grad()
    for micro in split_batch(data, 4):
        (module.total_loss(module.losses(micro, module.encode(micro))) / 3).backward()
    accumulated = torch.cat([p.grad.flatten() for p in module.parameters() if p.requires_grad])
    exact = torch.cat([g.flatten() for g in expected.values()])
    assert (accumulated - exact).norm() > 0.1 * exact.norm()


def test_random_state_is_replayed_for_the_gradient_pass():
    """With dropout, each micro-batch's gradient pass must see the masks of its cached pass:
    the result equals autograd through the same sequence of forward passes."""
    module = make(text={"dropout": 0.3}).double().train()
    data = batch(2)
    torch.manual_seed(7)
    outputs = [module.encode(micro) for micro in split_batch(data, 4)]
    joined = {
        side: type(outputs[0][side])(
            *(
                None if parts[0] is None else torch.cat(parts)
                for parts in zip(*(o[side] for o in outputs), strict=True)
            )
        )
        for side in outputs[0]
    }
    module.zero_grad()
    module.total_loss(module.losses(data, joined)).backward()
    expected = {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}
    torch.manual_seed(7)
    got, _ = cached_grads(module, data, 4)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-9, atol=1e-12, msg=name)


def test_micro_batch_size_must_divide_the_batch():
    with pytest.raises(ValueError, match="micro_batch_size 5 must divide the local batch of 12"):
        split_batch(batch(), 5)


def test_lightning_steps_with_micro_batches_match_the_automatic_steps():
    """Three optimiser steps (AdamW, warm-up/cosine, temperature clamp, clipping) in manual
    optimisation with cached gradients land on the weights of the ordinary step (float64:
    in float32, Adam turns the rounding noise of exactly-zero gradients, such as attention key
    biases, into differences of lr * 1e-3)."""
    data = [batch(seed) for seed in range(3)]
    finals = []
    for micro in (None, 4):
        module = make(micro_batch_size=micro).double()
        clip = {"gradient_clip_val": 0.5}
        if micro is not None:
            module.gradient_clip_val, clip = 0.5, {}
        trainer = L.Trainer(
            max_steps=3,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
            **clip,
        )
        trainer.fit(module, DataLoader(data, batch_size=None))
        assert trainer.global_step == 3
        finals.append(module.state_dict())
    assert finals[0].keys() == finals[1].keys()
    for name in finals[0]:
        torch.testing.assert_close(
            finals[1][name], finals[0][name], rtol=1e-9, atol=1e-11, msg=name
        )
