"""SepCLR's module (modules/sepclr.py): its loss is the objective of modules/losses/sepclr.py on
the branches' codes (common normalised, salient not), read from the group label only; the
evaluation reads the codes before the projection MLPs and exposes both spaces."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modules.sepclr import SepCLR
from tests.test_losses_sepclr import slow_terms
from tests.test_simclr import MODEL, OPTIM, SIZE, eval_batch, views_batch

METHOD = {"name": "sepclr", "common_dim": 4, "salient_dim": 3, "head_hidden": 8}
LABELS = {"shape": 3, "group": 2, "salient": 4}


def module(views: int = 2, labels: dict[str, int] | None = None, **method) -> SepCLR:
    torch.manual_seed(0)
    return SepCLR(
        method={**METHOD, **method},
        model=MODEL,
        optim=OPTIM,
        tokenizer=None,
        context={
            "modalities": ["image"],
            "views": {"image": views},
            "labels": LABELS if labels is None else labels,
            "image_size": SIZE,
        },
    ).double()


def training_batch(n: int = 6) -> dict:
    group = torch.tensor([1, 0, 1, 1, 0, 0])[:n]
    return {**views_batch(n), "label/group": group, "label/salient": torch.where(group == 1, 2, -1)}


@pytest.mark.parametrize("separate", [True, False])
def test_loss_is_the_objective_on_the_branch_codes_and_reads_only_the_group(separate):
    sep = module(separate_encoders=separate).train()
    batch = training_batch()
    outputs = sep.encode(batch)
    got = sep.losses(batch, outputs)
    codes = []
    salient = "salient/" if separate else ""
    for branch, normalise, prefix in ((sep.common, True, ""), (sep.salient, False, salient)):
        for v in (0, 1):
            z = branch.head(branch.code(outputs[f"{prefix}image@{v}"].pooled))
            codes.append(F.normalize(z, dim=1) if normalise else z)
    want = slow_terms(*codes, batch["label/group"] == 1)
    for name in sep.loss_terms:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-9, msg=name)
    other = {**batch, "label/salient": torch.zeros(6, dtype=torch.long)}
    again = sep.losses(other, outputs)
    assert all(torch.equal(again[k], got[k]) for k in got)
    assert sep.method_cfg.loss_weights == {
        "common": 1.0,
        "salient": 1000.0,
        "background": 1000.0,
        "jem": 10.0,
    }


@pytest.mark.parametrize("separate", [True, False])
def test_every_parameter_gets_a_gradient(separate):
    sep = module(separate_encoders=separate).train()
    batch = training_batch()
    sep.total_loss(sep.losses(batch, sep.encode(batch))).backward()
    missing = [n for n, p in sep.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    assert (sep.salient_towers is not None) == separate


def test_the_salient_encoder_is_initialised_afresh():
    sep = module()
    own = dict(sep.salient_towers.named_parameters())
    assert all(not torch.equal(p, own[n]) for n, p in sep.towers.named_parameters() if p.ndim > 1)


def test_evaluation_reads_both_codes_before_the_heads():
    sep = module().eval()
    batch = eval_batch(5)
    with torch.no_grad():
        out = sep.validation_step(batch, 0)
        pooled = sep.towers["image"](batch).pooled
        torch.testing.assert_close(out["raw"]["image"], sep.common.code(pooled), rtol=0, atol=0)
        salient = sep.salient_towers["image"](batch).pooled
        torch.testing.assert_close(out["outputs"]["space/salient"], sep.salient.code(salient))
        torch.testing.assert_close(out["outputs"]["space/common"], out["raw"]["image"])
        assert out["outputs"]["space/salient"].shape == (5, 3)
        for head in (sep.common.head, sep.salient.head):
            for p in head.parameters():
                p.add_(1.0)
        again = sep.validation_step(batch, 0)["outputs"]
    assert all(torch.equal(again[k], out["outputs"][k]) for k in again)
    assert sep.evaluators() == {"space_probe": {}}


def test_config_and_data_checks():
    with pytest.raises(ValueError, match="exactly 2 training views"):
        module(views=3)
    with pytest.raises(ValueError, match="needs the label 'group'"):
        module(labels={"shape": 3})
    with pytest.raises(ValueError, match="method.salient_dim"):
        module(salient_dim=0)
    with pytest.raises(ValueError, match="method.kernel_tau"):
        module(kernel_tau=0.0)
