"""EPCFormer (modules/epcformer.py) and its grounding metric (callbacks/mask_grounding.py): the mask
layout of the head, which towers each loss term trains, the baseline's one override, the
evaluator's IoU numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from callbacks.mask_grounding import MaskGrounding, MaskGroundingIoU
from experiments.config import load_experiment
from experiments.stages import build
from modules.epcformer import EPCFormerConfig
from modules.losses.epcformer import expression_alignment_loss

YAML = Path(__file__).resolve().parents[1] / "experiments" / "epcformer.yaml"
TINY = ["data.num_train=16", "data.num_val=8", "data.num_test=8", "data.batch_size=8"]


@pytest.fixture(scope="module")
def built():
    torch.manual_seed(0)
    datamodule, module = build(load_experiment(YAML, TINY)[-1].plain)
    return module, next(iter(datamodule.train_dataloader()))


def test_each_patch_lays_its_logits_over_its_own_pixels(built) -> None:
    module, batch = built
    g, p = module.grid, module.patch
    assert g * p == module.image_size == batch["image"].shape[-1]

    class Blocks(torch.nn.Module):  # patch t predicts t + pixel / 1000 for its pixels
        def forward(self, tokens, expression):
            t = torch.arange(g * g, dtype=torch.float64)[:, None]
            pixel = torch.arange(p * p, dtype=torch.float64)[None] / 1000
            return (t + pixel).expand(len(tokens), -1, -1)

    head, module.head = module.head, Blocks()
    try:
        out = module.eval_outputs(batch, module.encode(batch))["mask_logits/text"][0]
    finally:
        module.head = head
    for y, x in ((0, 0), (p, 0), (p + 1, 2 * p + 3), (g * p - 1, g * p - 1)):
        patch, pixel = (y // p) * g + x // p, (y % p) * p + x % p
        assert out[y, x].item() == pytest.approx(patch + pixel / 1000)


def test_alignment_trains_the_expression_towers_and_not_the_image(built) -> None:
    module, batch = built
    module.zero_grad()
    terms = module.losses(batch, module.encode(batch))
    assert set(terms) == {"focal", "dice", "alignment"}
    assert all(torch.isfinite(v) for v in terms.values())
    terms["alignment"].backward()
    grads = {n: p.grad for n, p in module.named_parameters()}
    assert all(g is None or not g.any() for n, g in grads.items() if n.startswith("towers.image"))
    assert all(g is None for n, g in grads.items() if n.startswith("head."))
    for tower in ("audio", "text"):
        assert any(g is not None and g.any() for n, g in grads.items() if f"towers.{tower}" in n)


def test_mask_loss_trains_the_head_and_all_three_towers(built) -> None:
    module, batch = built
    module.zero_grad()
    terms = module.losses(batch, module.encode(batch))
    (terms["focal"] + terms["dice"]).backward()
    for prefix in ("head.", "towers.image", "towers.audio", "towers.text"):
        assert any(
            p.grad is not None and p.grad.any()
            for n, p in module.named_parameters()
            if n.startswith(prefix)
        ), prefix


def test_the_baseline_is_one_override_that_drops_only_the_alignment_term() -> None:
    cfg = load_experiment(YAML, [*TINY, "method.loss_weights.alignment=0"])[-1].plain
    weights = cfg["method"]["loss_weights"]
    assert weights == {"focal": 2.0, "dice": 5.0, "alignment": 0.0}
    _, module = build(cfg)
    terms = {"focal": torch.tensor(1.0), "dice": torch.tensor(2.0), "alignment": torch.tensor(9.0)}
    assert module.total_loss(terms).item() == pytest.approx(12.0)


def test_config_names_the_bad_key() -> None:
    with pytest.raises(ValueError, match="method.hidden"):
        EPCFormerConfig(hidden=30, heads=4)
    with pytest.raises(ValueError, match="focal_alpha"):
        EPCFormerConfig(focal_alpha=1.5)


def test_iou_accuracy_miou_and_oiou_on_hand_made_masks() -> None:
    truth = torch.zeros(3, 4, 4, dtype=torch.bool)
    truth[:, :2, :2] = True  # 4 pixels each
    pred = torch.zeros_like(truth)
    pred[0, :2, :2] = True  # IoU 1
    pred[1, :2, :1] = True  # IoU 2/4
    pred[2, 2:, 2:] = True  # IoU 0 (4 + 4 union)
    metric = MaskGroundingIoU()
    metric.update(pred, truth, torch.tensor([0, 1, 2]))
    metric.update(pred[:1] & False, truth[:1], torch.tensor([0]))  # a repeat of item 0: ignored
    out = metric.compute()
    assert out["accuracy"].item() == pytest.approx(200 / 3)
    assert out["mIoU"].item() == pytest.approx(100 * 1.5 / 3)
    assert out["oIoU"].item() == pytest.approx(100 * 6 / 16)


def test_the_evaluator_scores_each_expression_against_the_batch_mask(built) -> None:
    module, batch = built
    evaluator = MaskGrounding(module, None, {"expressions": ["audio", "text"]})
    exact = (batch["mask"] * 2 - 1) * 10
    out = {"outputs": {"mask_logits/audio": exact, "mask_logits/text": -exact}}
    evaluator.update({**out, "index": batch["index"]}, batch)
    values = evaluator.compute()
    assert values["mask_grounding/audio/accuracy"].item() == 100
    assert values["mask_grounding/text/mIoU"].item() == 0


def test_item_pairs_equal_shared_positives_when_equal_labels_mean_equal_texts(built) -> None:
    """Items with the same words embed to the same text, so contrasting each audio with its own
    text (the loss) equals counting every same-words item as a positive."""
    module, batch = built
    batch = {k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()}
    for key in ("text_ids", "text_mask", "label/expression"):  # items 1-3 say what item 0 says
        batch[key][1:4] = batch[key][0]
    outputs = module.encode(batch)
    labels = batch["label/expression"]
    a, t = (module.normalized(m, outputs[m]) for m in ("audio", "text"))
    shared = expression_alignment_loss(a, t, module.scale, labels)
    assert module.losses(batch, outputs)["alignment"].item() == pytest.approx(shared.item())
