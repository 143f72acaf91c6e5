"""ConR module (modules/conr.py): the ConR term is ``conr_loss`` on the views' normalised
features with detached predictions (no gradient reaches the regressor through it); with
beta = 0 the gradient is the plain L1's; evaluation batches (no views) give the plain L1 only;
the regression evaluator reads the predictions; re-weighting as the official
``AgeDB._prepare_weights``; the configuration checks."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import convolve1d, gaussian_filter1d

from callbacks.evaluation import EmbeddingMetrics
from datamodules.shapes_sizes import ShapesSizesDataConfig, ShapesSizesDataModule
from modules.base import FitContext
from modules.conr import ConR, ConRConfig, bin_weights
from modules.losses.conr import conr_loss
from tests.tiny_modules import OPTIM

MODEL = {
    "embed_dim": 16,
    "image": {"name": "cnn", "channels": [8, 16]},
    "temperature": 0.07,
    "learnable_temperature": False,
    "max_logit_scale": 100.0,
}
#: Sizes with several samples within omega = 1 of each other and several far apart.
SIZES = torch.tensor([10.0, 10.5, 11.0, 14.0, 14.2, 20.0, 30.0, 31.0])


def module(image_size: int = 16, views: int = 2, model: dict | None = None, **method) -> ConR:
    torch.manual_seed(0)
    return ConR(
        method={"name": "conr", **method},
        model={**MODEL, **(model or {})},
        optim=OPTIM,
        tokenizer=None,
        context={
            "modalities": ["image"],
            "views": {"image": views},
            "image_size": image_size,
            "in_channels": 3,
        },
    )


def batch(views: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
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


def trainable(m: ConR) -> list[torch.nn.Parameter]:
    return [p for p in m.parameters() if p.requires_grad]


def test_conr_term_is_conr_loss_on_normalised_view_features_with_detached_predictions():
    m = module().train()
    b = batch()
    outputs = m.encode(b)
    terms = m.losses(b, outputs)
    features = torch.cat([m.normalized("image", outputs[f"image@{v}"]) for v in range(2)])
    predictions = torch.cat(
        [m.head(outputs[f"image@{v}"].pooled).squeeze(-1) for v in range(2)]
    ).detach()
    want = conr_loss(features, SIZES.repeat(2), predictions, temperature=0.07)
    torch.testing.assert_close(terms["conr"], want)
    assert terms["conr"] > 0  # the untrained regressor puts far sizes in wrong proximity
    # the regressor is reached neither through the detached predictions nor the features
    grads = torch.autograd.grad(terms["conr"], list(m.head.parameters()), allow_unused=True)
    assert all(g is None for g in grads)
    assert torch.autograd.grad(terms["conr"], m.towers["image"].head.weight)[0].abs().sum() > 0
    plain = F.l1_loss(m.head(outputs["image"].pooled).squeeze(-1), SIZES)
    torch.testing.assert_close(terms["regression"], plain)


def test_with_beta_zero_the_gradient_is_the_plain_l1s():
    b = batch()
    baseline = module(loss_weights={"regression": 1.0, "conr": 0.0}).train()
    outputs = baseline.encode(b)
    assert set(outputs) == {"image"}  # nothing reads the views: not encoded
    terms = baseline.losses(b, outputs)
    assert set(terms) == {"regression"}
    grads = torch.autograd.grad(baseline.total_loss(terms), trainable(baseline))
    reference = module().train()  # same initial weights (same seed)
    prediction = reference.head(reference.towers["image"](b).pooled).squeeze(-1)
    plain = torch.autograd.grad(F.l1_loss(prediction, SIZES), trainable(reference))
    for got, want in zip(grads, plain, strict=True):
        torch.testing.assert_close(got, want)
    with_conr = module().train()  # beta = 4 moves the tower differently
    total = with_conr.total_loss(with_conr.losses(b, with_conr.encode(b)))
    regularised = torch.autograd.grad(total, trainable(with_conr))
    assert not all(torch.allclose(g, w) for g, w in zip(regularised, plain, strict=True))


def test_evaluation_batches_without_views_give_the_plain_l1_only():
    m = module(reweight="inverse").eval()
    m.weight_of_bin.fill_(3.0)  # weights train, never evaluate
    b = batch(views=False)
    with torch.no_grad():
        terms = m.losses(b, m.encode(b))
        want = (m.head(m.towers["image"](b).pooled).squeeze(-1) - SIZES).abs().mean()
    assert set(terms) == {"regression"}
    torch.testing.assert_close(terms["regression"], want)
    with pytest.raises(KeyError, match="views"):
        m.train().losses(b, m.encode(b))


def test_regression_evaluator_logs_the_mae_of_the_predictions():
    data = ShapesSizesDataModule(
        ShapesSizesDataConfig(
            num_train=48,
            num_val=20,
            num_test=12,
            batch_size=12,
            eval_batch_size=8,
            image_size=32,
            size_max=24.0,
        )
    )
    data.prepare_data()
    data.setup("validate")
    m = module(image_size=32)
    assert m.evaluators() == {"regression": {"targets": ["size"]}}
    trainer = L.Trainer(
        callbacks=[EmbeddingMetrics({"exclude": ["knn", "linear_probe"]})],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    metrics = trainer.validate(m, datamodule=data, verbose=False)[0]
    errors = []
    m.eval()
    with torch.no_grad():
        for b in data.val_dataloader():
            outputs = m.eval_outputs(b, m.encode(b))
            errors.append((outputs["prediction/size"] - b["target/size"]).abs())
    mae = torch.cat(errors).mean().item()
    assert metrics["val/regression/size/MAE"] == pytest.approx(mae, rel=1e-5)
    assert metrics["val/loss/regression"] == pytest.approx(mae, rel=1e-5)  # loss_on_eval
    for region in ("many", "medium", "few"):
        assert f"val/regression/size/{region}/MAE" in metrics


def official_weights(labels, reweight, max_target=121, lds=False, ks=9, sigma=1.0):
    """``AgeDB._prepare_weights`` of agedb-dir/datasets.py (Gaussian LDS kernel), transcribed."""
    value_dict = {x: 0 for x in range(max_target)}
    for label in labels:
        value_dict[min(max_target - 1, int(label))] += 1
    if reweight == "sqrt_inv":
        value_dict = {k: np.sqrt(v) for k, v in value_dict.items()}
    elif reweight == "inverse":
        value_dict = {k: np.clip(v, 5, 1000) for k, v in value_dict.items()}
    num_per_label = [value_dict[min(max_target - 1, int(label))] for label in labels]
    if lds:
        half = (ks - 1) // 2
        base = [0.0] * half + [1.0] + [0.0] * half
        window = gaussian_filter1d(base, sigma=sigma) / max(gaussian_filter1d(base, sigma=sigma))
        smoothed = convolve1d(
            np.asarray([v for _, v in value_dict.items()]), weights=window, mode="constant"
        )
        num_per_label = [smoothed[min(max_target - 1, int(label))] for label in labels]
    weights = [np.float32(1 / x) for x in num_per_label]
    scaling = len(weights) / np.sum(weights)
    return np.array([scaling * x for x in weights])


@pytest.mark.parametrize(
    "options",
    [{"reweight": "inverse"}, {"reweight": "sqrt_inv"}, {"reweight": "sqrt_inv", "lds": True}],
)
def test_bin_weights_are_the_official_sample_weights(options: dict[str, Any]):
    rng = np.random.default_rng(0)
    targets = np.concatenate([rng.uniform(15, 25, 900), rng.uniform(6, 54, 60), [130.0]])
    cfg = ConRConfig(**options)
    got = bin_weights(targets, cfg)[np.minimum(cfg.max_target - 1, targets.astype(int))]
    want = official_weights(targets, cfg.reweight, lds=cfg.lds)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got.mean() == pytest.approx(1.0)


def test_prepare_fit_fills_the_weights_that_scale_both_terms():
    m = module(reweight="inverse")
    b = batch()
    ctx = FitContext(
        earlier=[], num_items=8, loader=lambda indices: [b], group_batches=lambda groups: None
    )
    m.prepare_fit(ctx)
    weights = torch.as_tensor(
        bin_weights(SIZES.numpy(), m.method_cfg)[SIZES.long()], dtype=torch.float32
    )
    assert "conr/max_weight" in ctx.metrics
    m.train()
    outputs = m.encode(b)
    terms = m.losses(b, outputs)
    error = (m.head(outputs["image"].pooled).squeeze(-1) - SIZES).abs()
    torch.testing.assert_close(terms["regression"], (weights * error).mean())
    features = torch.cat([outputs[f"image@{v}"].pooled for v in range(2)])
    predictions = torch.cat([m.head(outputs[f"image@{v}"].pooled).squeeze(-1) for v in range(2)])
    want = conr_loss(features, SIZES.repeat(2), predictions, weights.repeat(2))
    torch.testing.assert_close(terms["conr"], want)


def test_configuration_errors():
    with pytest.raises(ValueError, match="learnable_temperature"):
        module(model={"learnable_temperature": True})
    with pytest.raises(ValueError, match="two training views"):
        module(views=0)
    with pytest.raises(ValueError, match="lds"):
        module(lds=True)
    with pytest.raises(ValueError, match="reweight"):
        module(reweight="balanced")
