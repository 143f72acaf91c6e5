"""SupReMix module (modules/supremix.py): the pre-training stage is ``supremix_loss`` on the
two views' projected, normalised embeddings and encodes nothing else (no gradient to the
regressor); the probe stage encodes the plain image only and trains the regressor alone on the
frozen tower; the anchor-inclusive weights are Beta(2, 8) draws or the fixed ``mix_alpha``;
the regression evaluator reads the predictions; configuration checks."""

from __future__ import annotations

import pytest
import torch

from modules.losses.supremix import supremix_loss
from modules.simclr import projected_views
from modules.supremix import SupReMix, SupReMixConfig
from tests.tiny_modules import OPTIM

MODEL = {
    "embed_dim": 16,
    "image": {"name": "cnn", "channels": [8, 16]},
    "temperature": 0.3,
    "learnable_temperature": False,
    "max_logit_scale": 100.0,
}
SIZES = torch.tensor([10.0, 10.5, 11.0, 14.0, 14.2, 20.0, 30.0, 31.0])
PRETRAIN = {"loss_weights": {"regression": 0.0, "supremix": 1.0}}
PROBE = {"loss_weights": {"regression": 1.0, "supremix": 0.0}}


def module(views: int = 2, model: dict | None = None, **method) -> SupReMix:
    torch.manual_seed(0)
    return SupReMix(
        method={"name": "supremix", **method},
        model={**MODEL, **(model or {})},
        optim=OPTIM,
        tokenizer=None,
        context={
            "modalities": ["image"],
            "views": {"image": views},
            "image_size": 16,
            "in_channels": 3,
        },
    )


def batch(views: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n = len(SIZES)
    out = {
        "image": torch.randn(n, 3, 16, 16, generator=g),
        "index": torch.arange(n),
        "item_id": torch.arange(n),
        "target/size": SIZES.clone(),
    }
    if views:
        out |= {f"image@{v}": torch.randn(n, 3, 16, 16, generator=g) for v in range(2)}
    return out


def test_pretraining_is_supremix_on_the_projected_views_and_encodes_nothing_else():
    m = module(mix_alpha=0.2, **PRETRAIN).train()
    b = batch()
    outputs = m.encode(b)
    assert set(outputs) == {"image@0", "image@1"}  # the plain image is not encoded
    terms = m.losses(b, outputs)
    assert set(terms) == {"supremix"}
    z0, z1 = projected_views(m, m.projection, b, outputs, (0, 1))
    alpha = torch.full((16, 16), 0.2)
    want = supremix_loss(torch.cat([z0, z1]), SIZES.repeat(2), alpha, 0.3, 5.0)
    torch.testing.assert_close(terms["supremix"], want)
    m.total_loss(terms).backward()
    assert not m.head.weight.requires_grad  # the regressor is not trained here
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.towers.parameters())


def test_probe_trains_the_regressor_alone_on_the_plain_image_of_a_frozen_tower():
    m = module(views=0, model={"frozen": ["image"]}, **PROBE).train()
    assert not m.towers["image"].training  # frozen towers stay in eval mode
    b = batch()
    outputs = m.encode(b)
    assert set(outputs) == {"image"}  # the views are not encoded
    terms = m.losses(b, outputs)
    assert set(terms) == {"regression"}
    want = (m.predict(outputs["image"]) - SIZES).abs().mean()
    torch.testing.assert_close(terms["regression"], want)
    m.total_loss(terms).backward()
    assert m.head.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.towers.parameters())
    assert not any(p.requires_grad for p in m.projection.parameters())


def test_evaluation_gives_predictions_for_the_regression_evaluator():
    m = module(**PROBE).eval()
    b = batch(views=False)
    out = m.eval_outputs(b, m.encode(b))
    assert out["prediction/size"].shape == (len(SIZES),)
    assert m.evaluators() == {"regression": {"targets": ["size"]}}


def test_anchor_weights_are_beta_draws_or_the_fixed_alpha():
    torch.manual_seed(0)
    draws = module().anchor_weights(400, torch.zeros(1))
    assert draws.shape == (400, 400)
    assert ((draws > 0) & (draws < 1)).all()
    assert abs(draws.mean().item() - 0.2) < 0.01  # Beta(2, 8)'s mean
    assert abs(draws.var().item() - 16 / 1100) < 0.002  # and variance ab/((a+b)^2 (a+b+1))
    fixed = module(mix_alpha=0.5).anchor_weights(3, torch.zeros(1, dtype=torch.float64))
    assert fixed.dtype == torch.float64 and (fixed == 0.5).all()


@pytest.mark.parametrize(
    ("field", "value"),
    [("window", 0.0), ("beta_a", 0.0), ("mix_alpha", 1.5), ("head_dim", 0)],
)
def test_config_rejects_bad_values_naming_the_key(field, value):
    with pytest.raises(ValueError, match=field):
        SupReMixConfig(**{field: value})


def test_needs_a_fixed_temperature_and_two_views_for_pretraining():
    with pytest.raises(ValueError, match="learnable_temperature"):
        module(model={"learnable_temperature": True})
    with pytest.raises(ValueError, match="views"):
        module(views=1)
    module(views=0, **PROBE)  # the probe needs none
