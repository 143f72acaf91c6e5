"""SwAV as a method (modules/swav.py): what the official training loop does around the loss
(tests/test_losses_swav.py checks the loss itself against main_swav.py).

- the prototypes the loss reads are unit-norm, and the stored ones are normalised in place;
- during the first ``freeze_prototypes_steps`` optimiser steps the prototypes get a zero
  gradient and do not move (their normalised value), afterwards they do, in a Lightning run;
- the Sinkhorn codes the module's loss computes: one per code view only (not for the small
  crops), each sample's code summing to 1 and every prototype receiving B/K;
- multi-crop small views go through the head as their own BatchNorm batch and only predict;
- evaluation reads the representation before the head.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import modules.losses.swav as swav_losses
from modules.swav import SwAV
from tests.test_simclr import SIZE, eval_batch, views_batch, views_module

B, K = 8, 6


def swav(views: int = 2, **method) -> SwAV:  # noqa: ANN003
    return views_module(SwAV, views, num_prototypes=K, **method).train()


def test_the_loss_reads_unit_norm_prototypes_and_they_are_stored_normalised(monkeypatch):
    module = swav(freeze_prototypes_steps=0)
    batch = views_batch(B)
    with torch.no_grad():
        module.prototypes.weight.mul_(torch.linspace(0.5, 3.0, K, dtype=torch.float64)[:, None])
    seen = []
    loss = swav_losses.swav_loss

    def recording(views, prototypes, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(prototypes.detach().clone())
        return loss(views, prototypes, *args, **kwargs)

    monkeypatch.setattr("modules.swav.swav_loss", recording)
    first = module.losses(batch, module.encode(batch))["swav"]
    (norms,) = (p.norm(dim=1) for p in seen)
    torch.testing.assert_close(norms, torch.ones(K, dtype=torch.float64))
    torch.testing.assert_close(module.prototypes.weight, seen[0], rtol=0, atol=0)
    # rescaling the stored prototypes (what weight decay does) does not change the loss
    with torch.no_grad():
        module.prototypes.weight.mul_(2.0)
    again = module.losses(batch, module.encode(batch))["swav"]
    torch.testing.assert_close(again, first, rtol=0, atol=1e-12)


def test_the_prototypes_get_a_zero_gradient_while_frozen_and_a_real_one_after():
    batch = views_batch(B)
    for freeze, moves in ((1, False), (0, True)):
        module = swav(freeze_prototypes_steps=freeze)  # global_step is 0 outside a trainer
        module.total_loss(module.losses(batch, module.encode(batch))).backward()
        grad = module.prototypes.weight.grad
        assert grad is not None  # in the graph: DDP expects a gradient for every parameter
        assert (grad.abs().max() > 1e-8) == moves
        assert module.head[0].weight.grad.abs().max() > 1e-8


class Prototypes(L.Callback):
    """The normalised prototypes and a tower weight after every training step."""

    def __init__(self) -> None:
        self.prototypes: list[torch.Tensor] = []
        self.tower: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.prototypes.append(F.normalize(module.prototypes.weight.detach(), dim=1).clone())
        self.tower.append(next(module.towers.parameters()).detach().clone())


def test_the_prototypes_do_not_move_during_the_freeze_and_move_after():
    freeze, steps = 3, 5
    module = swav(freeze_prototypes_steps=freeze)
    start = F.normalize(module.prototypes.weight.detach(), dim=1).clone()
    batches = [views_batch(B, seed=s) for s in range(steps)]
    record = Prototypes()
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
    )
    trainer.fit(module, DataLoader(batches, batch_size=None))
    assert len(record.prototypes) == steps
    for step, prototypes in enumerate(record.prototypes):  # after optimiser step `step`
        if step < freeze:
            torch.testing.assert_close(prototypes, start, rtol=0, atol=1e-12)
        else:
            assert (prototypes - start).abs().max() > 1e-4, f"step {step}"
    # the rest of the model trains from the first step
    assert (record.tower[0] - record.tower[1]).abs().max() > 1e-6


@pytest.mark.parametrize("small", [0, 2])
def test_codes_come_from_the_two_large_views_and_sum_to_one_per_sample(monkeypatch, small):
    module = swav(views=2 + small)
    codes = []
    sinkhorn = swav_losses.sinkhorn_knopp

    def recording(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        codes.append(sinkhorn(*args, **kwargs))
        return codes[-1]

    monkeypatch.setattr(swav_losses, "sinkhorn_knopp", recording)
    batch = views_batch(B, sizes=(SIZE, SIZE) + (SIZE // 2,) * small)
    module.losses(batch, module.encode(batch))
    assert len(codes) == 2  # code_views (0, 1) only, whatever the number of small crops
    for q in codes:
        assert q.shape == (B, K) and not q.requires_grad
        torch.testing.assert_close(q.sum(dim=1), torch.ones(B, dtype=torch.float64))
        # 3 Sinkhorn iterations: the prototype marginals are close to, not exactly, B / K
        torch.testing.assert_close(
            q.sum(dim=0), torch.full((K,), B / K, dtype=torch.float64), rtol=0, atol=0.2
        )


def test_small_crops_are_their_own_batchnorm_batch_and_only_predict():
    module = swav(views=4)
    batch = views_batch(B, sizes=(SIZE, SIZE, SIZE // 2, SIZE // 2))
    outputs = module.encode(batch)
    loss = module.losses(batch, outputs)["swav"]
    small = outputs["image@2"].pooled
    (grad,) = torch.autograd.grad(loss, small)
    assert grad.abs().max() > 0  # the small crop predicts the large crops' codes
    # BatchNorm statistics per input size: shifting the small crops' representations by a
    # constant (removed by their BN batch) leaves the loss unchanged
    shifted = dict(outputs)
    for v in (2, 3):
        out = outputs[f"image@{v}"]
        shifted[f"image@{v}"] = out._replace(pooled=out.pooled + 5.0)
    torch.testing.assert_close(module.losses(batch, shifted)["swav"], loss, rtol=0, atol=1e-10)


def test_code_views_must_exist():
    with pytest.raises(ValueError, match="code_views"):
        swav(code_views=[0, 2])


def test_evaluation_reads_the_representation_before_the_head():
    module = swav().eval()
    batch = eval_batch(5)
    with torch.no_grad():
        out = module.validation_step(batch, 0)
        pooled = module.towers["image"](batch).pooled
        torch.testing.assert_close(out["raw"]["image"], pooled, rtol=0, atol=0)
        for p in [*module.head.parameters(), module.prototypes.weight]:
            p.add_(1.0)
        torch.testing.assert_close(module.validation_step(batch, 0)["raw"], out["raw"])
