"""SimLAP the method (modules/simlap.py): the gate lies in (0, 1); the pair classes of each mode
stay inside the anchor's labeling (identical: y2 = y1, distinct: y2 != y1); the module's loss is
the per-positive SupCon reference on the projected views when the gate is open and the pairs
identical; the linear heads read the stop-gradient representation and feed the ``classifier``
evaluator. The 2-process step is checked by tests/conformance/test_methods.py."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from modules.simlap import LabelPairGate, SimLAP, pair_classes
from tests.test_losses_simlap import slow_per_positive_supcon
from tests.test_simclr import MODEL, OPTIM, SIZE, views_batch

LABELS = {"shape": 3, "color": 4, "count": 2}


def simlap(**method: Any) -> SimLAP:
    """SimLAP on a 16-d CNN, two views, three labelings, tau 0.1, float64."""
    torch.manual_seed(0)
    return SimLAP(
        method={"name": "simlap", "head_hidden": 8, "label_dim": 6, "gate_hidden": 10, **method},
        model={**MODEL, "temperature": 0.1},
        optim=OPTIM,
        tokenizer=None,
        context={
            "modalities": ["image"],
            "views": {"image": 2},
            "image_size": SIZE,
            "labels": LABELS,
        },
    ).double()


def labelled(batch: int) -> dict:
    g = torch.Generator().manual_seed(3)
    return views_batch(batch) | {
        f"label/{t}": torch.randint(n, (batch,), generator=g) for t, n in LABELS.items()
    }


def test_gate_lies_strictly_between_zero_and_one():
    torch.manual_seed(0)
    gate = LabelPairGate(9, 6, 10, 5).double().train()
    y1, y2 = torch.randint(9, (32,)), torch.randint(9, (32,))
    g = gate(y1, y2)
    assert g.shape == (32, 5) and g.min() > 0 and g.max() < 1
    # the pair's gate depends on both classes, symmetrically (the mean of the two embeddings)
    gate.eval()
    torch.testing.assert_close(gate(y1, y2), gate(y2, y1))
    assert not torch.allclose(gate(y1, y1), gate(y1, y2))


@pytest.mark.parametrize("pairs", ["arbitrary", "identical", "distinct"])
def test_pair_classes_stay_in_the_anchors_labeling(pairs):
    sizes = torch.tensor([3, 4, 2])
    offsets = sizes.cumsum(0) - sizes
    g = torch.Generator().manual_seed(1)
    labels = torch.stack([torch.randint(int(n), (50,), generator=g) for n in sizes], dim=1)
    torch.manual_seed(0)
    y1, y2 = pair_classes(labels, sizes, offsets, 2, pairs)
    union = (labels + offsets).repeat(2, 1)
    assert (union == y1[:, None]).any(dim=1).all()  # y1 is one of the anchor's own labels
    task1, task2 = (torch.bucketize(y, offsets, right=True) - 1 for y in (y1, y2))
    assert torch.equal(task1, task2) and len(task1.unique()) == 3  # every labeling drawn
    if pairs == "identical":
        assert torch.equal(y1, y2)
    elif pairs == "distinct":
        assert (y1 != y2).all()
    else:  # a random anchor's class: sometimes the anchor's own, mostly not
        assert 0 < (y1 == y2).float().mean() < 0.9


def test_open_gate_identical_pairs_one_labeling_is_per_positive_supcon():
    module = simlap(gate=False, pairs="identical", tasks=["shape"]).train()
    batch = labelled(6)
    outputs = module.encode(batch)
    got = module.losses(batch, outputs)["simlap"]
    pooled = torch.cat([outputs["image@0"].pooled, outputs["image@1"].pooled])
    z = module.head(pooled)  # one BatchNorm batch over both views, then LayerNorm
    want = slow_per_positive_supcon(z, batch["label/shape"].repeat(2), module.scale)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_heads_read_the_stop_gradient_representation():
    module = simlap().train()
    batch = labelled(6)
    terms = module.losses(batch, module.encode(batch))
    tower = [p for p in module.towers.parameters() if p.requires_grad]
    grads = torch.autograd.grad(terms["ce"], tower, allow_unused=True)
    assert all(g is None or g.abs().max() == 0 for g in grads)
    assert any(
        g is not None for g in torch.autograd.grad(terms["simlap"], tower, allow_unused=True)
    )
    module.eval()
    eval_batch = {"image": batch["image@0"], "index": batch["index"]}
    outputs = module.eval_outputs(eval_batch, module.encode(eval_batch))
    assert sorted(outputs) == [f"logits/image/{t}" for t in sorted(LABELS)]
    assert outputs["logits/image/color"].shape == (6, 4)
    assert module.evaluators() == {"classifier": {}}


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ({"pairs": "random"}, "pairs"),
        ({"tasks": ["size"]}, "method.tasks"),
        ({"tasks": ["shape", "shape"]}, "tasks"),
        ({"head_dim": 0}, "head_dim"),
    ],
)
def test_bad_settings_name_the_key(method, message):
    with pytest.raises(ValueError, match=message):
        simlap(**method)
