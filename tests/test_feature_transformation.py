"""FT on MoCo v2 (modules/feature_transformation.py): the module's loss is the slow loop on the
query of view 0, the momentum key of view 1 and the queue before the step; afterwards the queue
holds the un-mixed keys and the key encoder has moved by the EMA; both flags off is plain MoCo;
a checkpoint carries the queue, its pointer, the step and the key encoder, so the next step is
the same. Two processes against one (loss, gradients, with the queue's gather) are
tests/conformance/test_methods.py's."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from modules.base import FitContext, load_checkpoint
from modules.feature_transformation import FeatureTransformation, FeatureTransformationConfig
from modules.losses.feature_transformation import draw_transformation
from tests.test_losses_feature_transformation import slow_ft_loss

F64 = torch.float64
SIZE = 16
QUEUE = 10  # not a multiple of the batch: the ring wraps
MODEL = {
    "embed_dim": 8,
    "image": {"name": "cnn", "channels": [4, 8]},
    "temperature": 0.2,
    "learnable_temperature": False,
    "max_logit_scale": 100.0,
}
OPTIM = {
    "lr": 1e-2,
    "weight_decay": 0.1,
    "betas": [0.9, 0.98],
    "eps": 1e-6,
    "warmup_steps": 1,
    "min_lr_ratio": 0.0,
}


def build(**method: Any) -> FeatureTransformation:
    torch.manual_seed(0)
    cfg = {"queue_size": QUEUE, "momentum": 0.9, "head_hidden": 8, "head_dim": 4, **method}
    return FeatureTransformation(
        method={"name": "feature_transformation", **cfg},
        model=MODEL,
        optim=OPTIM,
        tokenizer=None,
        context={"modalities": ["image"], "views": {"image": 2}, "image_size": SIZE},
    ).double()


def views_batch(size: int, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "image@0": torch.randn(size, 3, SIZE, SIZE, generator=generator, dtype=F64),
        "image@1": torch.randn(size, 3, SIZE, SIZE, generator=generator, dtype=F64),
        "index": torch.arange(size),
    }


def perturbed(module: FeatureTransformation) -> FeatureTransformation:
    """The online weights moved away from the key encoder's (as after optimiser steps)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in [*module.towers.parameters(), *module.head.parameters()]:
            p.add_(0.05 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module


def tau(module: FeatureTransformation) -> float:
    """``model.temperature`` as the module holds it (log(1/T), stored once in float32)."""
    return 1.0 / module.scale.item()


def step(module: FeatureTransformation, batch: dict) -> torch.Tensor:
    return module.losses(batch, module.encode(batch))["moco"]


def test_loss_is_the_slow_loop_and_the_queue_then_holds_the_unmixed_keys():
    module = perturbed(build()).train()
    batch = views_batch(6)
    queue_before = module.queue.clone()
    online = [p.clone() for p in [*module.towers.parameters(), *module.head.parameters()]]
    key_before = [p.clone() for p in module.momentum_encoder.parameters()]
    outputs = module.encode(batch)
    assert "image@1" not in outputs  # the online tower only sees view 0
    got = module.losses(batch, outputs)["moco"]

    # the key encoder moved by the EMA (m = 0.9), before making the keys
    keys = module.momentum_encoder.parameters()
    for after, before, source in zip(keys, key_before, online, strict=True):
        torch.testing.assert_close(after, 0.9 * before + 0.1 * source)
    q = F.normalize(module.head(outputs["image@0"].pooled), dim=1)
    k = module.keys(batch)
    draw = draw_transformation(int(module.mix_seed), 0, QUEUE, 2.0, 1.6)
    assert draw.lam > 1.0 and 0.0 < draw.mu < 1.0
    want = slow_ft_loss(q, k, queue_before, tau(module), draw.lam, draw.mu, draw.perm.tolist())
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)

    # un-mixed keys in rows 0-5, the rest untouched; the next step draws anew
    torch.testing.assert_close(module.queue[:6], k, rtol=0, atol=0)
    torch.testing.assert_close(module.queue[6:], queue_before[6:], rtol=0, atol=0)
    assert int(module.queue_pointer) == 6 and int(module.steps) == 1
    step(module, views_batch(6, seed=1))  # wraps: rows 6-9, then 0-1
    assert int(module.queue_pointer) == 2 and int(module.steps) == 2
    torch.testing.assert_close(module.queue[2:6], k[2:], rtol=0, atol=0)
    assert not torch.equal(module.queue[:2], k[:2])


def test_both_flags_off_is_plain_moco_v2():
    batch = views_batch(6)
    plain = build(positive_extrapolation=False, negative_interpolation=False).train()
    module = perturbed(plain)
    queue = module.queue.clone()
    outputs = module.encode(batch)
    got = module.losses(batch, outputs)["moco"]
    q = F.normalize(module.head(outputs["image@0"].pooled), dim=1)
    want = slow_ft_loss(q, module.keys(batch), queue, tau(plain), 1.0, 1.0, list(range(QUEUE)))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    assert not torch.allclose(step(perturbed(build()).train(), batch), got)


def test_checkpoint_carries_queue_step_and_key_encoder_so_the_next_step_is_the_same():
    module = perturbed(build()).train()
    step(module, views_batch(6))
    buffer = io.BytesIO()
    torch.save(
        {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, buffer
    )
    buffer.seek(0)
    checkpoint = load_checkpoint(buffer)  # float64 weights into a float64 module (no rounding)
    again = FeatureTransformation(**checkpoint["hyper_parameters"]).double()
    again.load_state_dict(checkpoint["state_dict"], strict=True)
    again.train()
    for name in ("queue", "queue_pointer", "steps", "mix_seed"):
        torch.testing.assert_close(getattr(again, name), getattr(module, name), rtol=0, atol=0)
    for a, b in zip(
        again.momentum_encoder.parameters(), module.momentum_encoder.parameters(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    batch = views_batch(6, seed=2)
    torch.testing.assert_close(step(again, batch), step(module, batch), rtol=0, atol=0)
    torch.testing.assert_close(again.queue, module.queue, rtol=0, atol=0)


def test_prepare_fit_starts_the_key_encoder_from_the_online_one_only_before_training():
    module = perturbed(build())
    context = FitContext(earlier=[], num_items=6, loader=lambda _: [], group_batches=print)
    module.prepare_fit(context)
    online = [*module.towers.parameters(), *module.head.parameters()]
    for key, source in zip(module.momentum_encoder.parameters(), online, strict=True):
        torch.testing.assert_close(key, source, rtol=0, atol=0)
        assert not key.requires_grad
    step(module.train(), views_batch(6))
    before = [p.clone() for p in module.momentum_encoder.parameters()]
    perturbed(module).prepare_fit(context)  # a resumed run keeps its key encoder
    for key, kept in zip(module.momentum_encoder.parameters(), before, strict=True):
        torch.testing.assert_close(key, kept, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("key", "value"),
    [("queue_size", 0), ("momentum", 1.0), ("alpha_p", 0.0), ("alpha_n", -1.0), ("head_dim", 0)],
)
def test_config_names_the_bad_key(key: str, value: float):
    with pytest.raises(ValueError, match=key):
        FeatureTransformationConfig(**{key: value})
