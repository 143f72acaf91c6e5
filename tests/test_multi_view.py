"""MV-InfoNCE / MV-DHEL modules (modules/multi_view.py): the loss of K views through SimCLR's
projection head (one BatchNorm batch over all views) is the slow loop of the paper's equation;
``method.pairwise`` is the pairwise-average baseline (with K = 2 for InfoNCE: SimCLR's step);
too few views fail in one line; evaluation reads ``h`` before the head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modules.multi_view import MVDHEL, MVInfoNCE
from modules.simclr import SimCLR
from tests.test_losses_multi_view import slow_mv_dhel, slow_mv_infonce
from tests.test_simclr import eval_batch, slow_nt_xent, views_batch, views_module

K = 3
NAMES = {MVInfoNCE: "mv_infonce", MVDHEL: "mv_dhel"}


def mv_module(cls: type, views: int, **method: object) -> MVInfoNCE | MVDHEL:
    """``cls`` on the SimCLR tests' tiny float64 CNN with ``views`` training views, a narrow
    head (the slow loops go scalar by scalar)."""
    return views_module(cls, views, name=NAMES[cls], head_hidden=8, head_dim=6, **method)


def projected(module, outputs, k: int) -> list[torch.Tensor]:  # noqa: ANN001
    """normalize(head(h)) of the k views, the head's BatchNorm over all of them at once."""
    pooled = torch.cat([outputs[f"image@{v}"].pooled for v in range(k)])
    return list(F.normalize(module.head(pooled), dim=1).chunk(k))


@pytest.mark.parametrize(("cls", "slow"), [(MVInfoNCE, slow_mv_infonce), (MVDHEL, slow_mv_dhel)])
def test_module_loss_is_the_slow_loop_on_the_projected_views(cls, slow):
    module = mv_module(cls, K).train()
    batch = views_batch(5, sizes=(16,) * K)
    outputs = module.encode(batch)
    terms = module.losses(batch, outputs)
    assert list(terms) == [cls.loss_terms[0]]
    want = slow(projected(module, outputs, K), module.scale)
    torch.testing.assert_close(terms[cls.loss_terms[0]], want, rtol=0, atol=1e-10)


def test_pairwise_option_is_the_averaged_two_view_loss():
    module = mv_module(MVInfoNCE, K, pairwise=True).train()
    batch = views_batch(5, sizes=(16,) * K)
    outputs = module.encode(batch)
    z = projected(module, outputs, K)
    pairs = [(0, 1), (0, 2), (1, 2)]
    want = sum(slow_nt_xent(z[a], z[b], module.scale) for a, b in pairs) / 3
    got = module.losses(batch, outputs)
    torch.testing.assert_close(got["pairwise_nt_xent"], want, rtol=0, atol=1e-10)


def test_k2_pairwise_infonce_is_simclr():
    mv, simclr = (
        mv_module(MVInfoNCE, 2, pairwise=True),
        views_module(SimCLR, 2, head_hidden=8, head_dim=6),
    )
    simclr.load_state_dict(mv.state_dict())
    batch = views_batch(6)
    got = mv.train().losses(batch, mv.encode(batch))["pairwise_nt_xent"]
    want = simclr.train().losses(batch, simclr.encode(batch))["nt_xent"]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls", [MVInfoNCE, MVDHEL])
def test_needs_at_least_two_views(cls):
    with pytest.raises(ValueError, match="at least 2 training views"):
        mv_module(cls, 1)


def test_evaluation_reads_the_representation_before_the_head():
    module = mv_module(MVDHEL, K).eval()
    batch = eval_batch(5)
    with torch.no_grad():
        out = module.validation_step(batch, 0)
        torch.testing.assert_close(out["raw"]["image"], module.towers["image"](batch).pooled)
