"""The ``open_world`` evaluator's metric (callbacks/open_world.py) on a hand-computed case:
known accuracy, Hungarian clustering accuracy and NMI on the novel classes and on all."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from callbacks.evaluators import EVALUATORS
from callbacks.open_world import OpenWorldMetrics, cluster_accuracy, nmi

# 2 known classes (0, 1), 2 novel (2, 3); the classifier has 6 outputs
LABELS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
PREDS = torch.tensor([0, 0, 1, 0, 3, 3, 2, 5])


def test_hand_computed_case() -> None:
    metric = OpenWorldMetrics(num_known=2)
    metric.update(PREDS[:5], LABELS[:5], torch.arange(5))
    metric.update(PREDS[5:], LABELS[5:], torch.arange(5, 8))
    metric.update(PREDS[:2], LABELS[:2], torch.arange(2))  # DDP padding: duplicates dropped
    values = {k: float(v) for k, v in metric.compute().items()}
    # known: 3 of 4 right
    assert values["known/accuracy"] == pytest.approx(75.0)
    # novel: 3 -> 2 (2 items), 2 -> 3 (1 item), 5 unmatched: 3 of 4
    assert values["novel/accuracy"] == pytest.approx(75.0)
    # novel NMI: H(pred) = 1.5 ln 2, H(label) = ln 2, MI = ln 2 -> ln 2 / 1.25 ln 2 = 0.8
    assert values["novel/nmi"] == pytest.approx(80.0)
    # all: 0 -> 0 (2), 1 -> 1 (1), 3 -> 2 (2), 2 or 5 -> 3 (1): 6 of 8
    assert values["all/accuracy"] == pytest.approx(75.0)
    sklearn = pytest.importorskip("sklearn.metrics")
    want = sklearn.normalized_mutual_info_score(LABELS.numpy(), PREDS.numpy())
    assert values["all/nmi"] == pytest.approx(100.0 * want)


def test_logits_are_arg_maxed_and_permuted_clusters_score_full_marks() -> None:
    labels = np.array([0, 1, 2, 2, 3, 3, 3])
    relabelled = np.array([5, 4, 0, 0, 2, 2, 2])
    assert cluster_accuracy(relabelled, labels) == 1.0
    assert math.isclose(nmi(relabelled, labels), 1.0)
    assert math.isclose(nmi(np.zeros(4, int), np.zeros(4, int)), 1.0)
    metric = OpenWorldMetrics(num_known=1)
    logits = torch.nn.functional.one_hot(torch.as_tensor(relabelled), 6).float()
    metric.update(logits, torch.as_tensor(labels), torch.arange(7))
    values = metric.compute()
    assert float(values["known/accuracy"]) == 0.0  # a known class must keep its own id
    assert float(values["novel/accuracy"]) == pytest.approx(100.0)


def test_registered() -> None:
    assert "open_world" in EVALUATORS
