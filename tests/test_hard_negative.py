"""Hard-negative SimCLR as a method (modules/hard_negative.py): SimCLR's views, head and
evaluation with the loss swapped for L_hard; ``hard_fraction = 1`` is SimCLR exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modules.hard_negative import HardNegativeSimCLR, HardNegativeSimCLRConfig
from modules.simclr import SimCLR
from tests.test_losses_hard_negative import slow_hard_negative
from tests.test_simclr import eval_batch, views_batch, views_module


def hard(views: int = 2, **method) -> HardNegativeSimCLR:  # noqa: ANN003
    return views_module(HardNegativeSimCLR, views, name="hard_negative_simclr", **method).train()


def test_module_loss_is_the_slow_loop_on_the_projected_views():
    module = hard(hard_fraction=0.3)
    batch = views_batch(6)
    outputs = module.encode(batch)
    got = module.losses(batch, outputs)["hard_nt_xent"]
    pooled = torch.cat([outputs["image@0"].pooled, outputs["image@1"].pooled])
    z = F.normalize(module.head(pooled), dim=1)
    want = slow_hard_negative(z[:6], z[6:], module.scale, 0.3)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_every_negative_is_simclr():
    batch = views_batch(6)
    module, simclr = hard(hard_fraction=1.0), views_module(SimCLR, 2).train()
    simclr.load_state_dict(module.state_dict())
    got = module.losses(batch, module.encode(batch))["hard_nt_xent"]
    assert torch.equal(got, simclr.losses(batch, simclr.encode(batch))["nt_xent"])


def test_config_and_views_are_checked():
    with pytest.raises(ValueError, match="hard_fraction must be in"):
        HardNegativeSimCLRConfig(hard_fraction=0.0)
    with pytest.raises(ValueError, match="exactly 2 training views"):
        hard(views=3)


def test_evaluation_also_exposes_the_projected_embedding():
    """``projection/image`` is normalize(g(h)) of the plain input (the head in eval mode), for
    the uniformity-tolerance evaluator; the embedding itself stays h, as SimCLR's."""
    module = hard().eval()
    batch = eval_batch(5)
    with torch.no_grad():
        out = module.validation_step(batch, 0)
        pooled = module.towers["image"](batch).pooled
        want = F.normalize(module.head(pooled), dim=1)
    torch.testing.assert_close(out["outputs"]["projection/image"], want, rtol=0, atol=0)
    torch.testing.assert_close(out["raw"]["image"], pooled, rtol=0, atol=0)
