"""Grounding and grounded-QA metrics (callbacks/grounding.py) on hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from callbacks.grounding import GroundingMetrics, intersection_over_prediction


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_recall_miou_and_iop_by_hand():
    metric = GroundingMetrics()
    # IoU: 1.0, 0.5 (pred [0, 0.4] in truth [0, 0.8]: IoP 1), 0.0, and an unknown truth
    metric.update(
        t(0.2, 0.0, 0.0, 0.1),
        t(0.6, 0.4, 0.1, 0.2),
        t(0.2, 0.0, 0.5, float("nan")),
        t(0.6, 0.8, 0.9, float("nan")),
        torch.tensor([0, 1, 2, 3]),
    )
    out = metric.compute()
    assert out["R1_IoU0.3"].item() == pytest.approx(200 / 3)
    assert out["R1_IoU0.5"].item() == pytest.approx(200 / 3)
    assert out["R1_IoU0.7"].item() == pytest.approx(100 / 3)
    assert out["mIoU"].item() == pytest.approx(50.0)
    assert out["mIoP"].item() == pytest.approx(200 / 3) and out["IoP0.5"].item() == pytest.approx(
        200 / 3
    )
    assert "qa/accuracy" not in out


def test_rows_are_counted_once_by_index():
    once, twice = GroundingMetrics(), GroundingMetrics()
    args = (t(0.0, 0.5), t(0.5, 1.0), t(0.0, 0.0), t(0.5, 0.5), torch.tensor([4, 9]))
    once.update(*args)
    twice.update(*args)
    twice.update(*args)  # e.g. a padded DDP shard repeats rows
    assert once.compute()["mIoU"] == twice.compute()["mIoU"] == 50.0


def test_qa_accuracy_and_acc_gqa():
    metric = GroundingMetrics()
    # right + inside (IoP 1), right + outside (IoP 0), wrong + inside, right + unknown truth
    metric.update(
        t(0.1, 0.6, 0.1, 0.0),
        t(0.2, 0.9, 0.2, 0.5),
        t(0.0, 0.0, 0.0, float("nan")),
        t(0.5, 0.5, 0.5, float("nan")),
        torch.tensor([0, 1, 2, 3]),
        torch.tensor([True, True, False, True]),
    )
    out = metric.compute()
    assert out["qa/accuracy"].item() == pytest.approx(75.0)
    assert out["qa/acc_gqa"].item() == pytest.approx(100 / 3)


def test_intersection_over_prediction():
    iop = intersection_over_prediction(
        t(0.2, 0.0, 0.3), t(0.4, 1.0, 0.3), t(0.0, 0.5, 0.0), t(1.0, 1.0, 1.0)
    )
    assert torch.allclose(iop, t(1.0, 0.5, 0.0))
