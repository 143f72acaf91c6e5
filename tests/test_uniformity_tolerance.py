"""The ``uniformity_tolerance`` evaluator (callbacks/uniformity_tolerance.py) against a direct
numpy computation of Wang & Liu's uniformity and tolerance: distinct items by id (padding
duplicates and arrival order do not matter, as after the DDP gather), unlabelled rows left out,
the evenly spaced cap; and when it is on by default."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from callbacks.evaluators import EVALUATORS
from callbacks.uniformity_tolerance import UniformityTolerance, UniformityToleranceEvaluator

TASKS = ("shape", "color")


def numpy_reference(z: np.ndarray, labels: dict[str, np.ndarray]) -> dict[str, float]:
    """``log mean_{i<j} exp(-2 |z_i - z_j|^2)`` and, per task, the mean ``<z_i, z_j>`` over the
    ordered pairs i != j of one class (labels -1 excluded), written pair by pair."""
    n = len(z)
    kernel = [np.exp(-2 * np.sum((z[i] - z[j]) ** 2)) for i in range(n) for j in range(i + 1, n)]
    out = {"uniformity": float(np.log(np.mean(kernel)))}
    for task, label in labels.items():
        sims = [
            float(z[i] @ z[j])
            for i in range(n)
            for j in range(n)
            if i != j and label[i] == label[j] and label[i] >= 0
        ]
        out[f"tolerance/{task}"] = float(np.mean(sims))
    return out


def items(n: int = 10, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(n, 4, generator=g, dtype=torch.float64), dim=1)
    labels = {"shape": torch.arange(n) % 3, "color": torch.arange(n) % 2}
    labels["shape"][4] = -1  # unlabelled for one task
    return z, labels


def feed(metric: UniformityTolerance, z, labels, order, duplicates=()) -> dict[str, float]:
    """Rows in ``order`` (then ``duplicates`` again, as padding), in batches of 3."""
    rows = torch.tensor(list(order) + list(duplicates))
    for start in range(0, len(rows), 3):
        pick = rows[start : start + 3]
        metric.update(z[pick], {t: v[pick] for t, v in labels.items()}, pick)
    return {k: float(v) for k, v in metric.compute().items()}


def test_matches_numpy_whatever_the_order_and_padding():
    z, labels = items()
    want = numpy_reference(z.numpy(), {t: v.numpy() for t, v in labels.items()})
    got = feed(UniformityTolerance(TASKS), z, labels, [7, 2, 9, 0, 5, 1, 8, 3, 6, 4], [2, 7])
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-6)


def test_the_cap_keeps_evenly_spaced_items_by_id():
    z, labels = items(9, seed=1)
    keep = [0, 2, 4, 6, 8]  # linspace(0, 8, 5)
    want = numpy_reference(z[keep].numpy(), {t: v[keep].numpy() for t, v in labels.items()})
    got = feed(UniformityTolerance(TASKS, max_items=5), z, labels, reversed(range(9)))
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-6)


def test_limits_collapse_and_antipodal_classes():
    """Collapsed embeddings: uniformity 0 (its maximum), tolerance 1; two antipodal classes:
    tolerance 1 and uniformity log(mean over pairs: within class 1, across e^-8)."""
    z = torch.tensor([[1.0, 0.0]] * 3 + [[-1.0, 0.0]] * 3)
    label = {"shape": torch.tensor([0, 0, 0, 1, 1, 1])}
    collapsed = feed(UniformityTolerance(("shape",)), z[:1].repeat(6, 1), label, range(6))
    assert collapsed == pytest.approx({"uniformity": 0.0, "tolerance/shape": 1.0}, abs=1e-6)
    split = feed(UniformityTolerance(("shape",)), z, label, range(6))
    want = np.log((6 * 1.0 + 9 * np.exp(-8.0)) / 15)
    assert split == pytest.approx({"uniformity": want, "tolerance/shape": 1.0}, abs=1e-6)


def module(modalities=("image",)) -> SimpleNamespace:
    return SimpleNamespace(modalities=modalities, device=torch.device("cpu"))


def test_evaluator_logs_per_task_and_is_default_for_one_labelled_encoder():
    data = SimpleNamespace(labels={"shape": 3, "color": 2})
    assert EVALUATORS["uniformity_tolerance"] is UniformityToleranceEvaluator
    applies = UniformityToleranceEvaluator.applies
    assert applies(module(), data) and not applies(module(("image", "text")), data)
    assert not applies(module(), SimpleNamespace(labels={}))
    evaluator = UniformityToleranceEvaluator(module(), data, {"max_items": 64})
    assert evaluator.compute() == {}  # nothing seen
    z, labels = items()
    out = {"embeddings": {"image": z}, "labels": labels, "item_id": torch.arange(10)}
    evaluator.update(out, {})
    got = {k: float(v) for k, v in evaluator.compute().items()}
    want = numpy_reference(z.numpy(), {t: v.numpy() for t, v in labels.items()})
    assert got == pytest.approx({f"uniformity_tolerance/{k}": v for k, v in want.items()})
    with pytest.raises(ValueError, match="uniformity_tolerance.modality"):
        UniformityToleranceEvaluator(module(), data, {"modality": "audio"})


def test_a_projection_output_is_measured_too():
    """A method's ``projection/<modality>`` output gets the same two quantities, separately."""
    data = SimpleNamespace(labels={"shape": 3, "color": 2})
    evaluator = UniformityToleranceEvaluator(module(), data, {})
    z, labels = items()
    projected, _ = items(seed=5)
    out = {"embeddings": {"image": z}, "labels": labels, "item_id": torch.arange(10)}
    evaluator.update({**out, "outputs": {"projection/image": projected}}, {})
    got = {k: float(v) for k, v in evaluator.compute().items()}
    numpy_labels = {t: v.numpy() for t, v in labels.items()}
    want = {
        **{
            f"uniformity_tolerance/{k}": v
            for k, v in numpy_reference(z.numpy(), numpy_labels).items()
        },
        **{
            f"uniformity_tolerance/projection/{k}": v
            for k, v in numpy_reference(projected.numpy(), numpy_labels).items()
        },
    }
    assert got == pytest.approx(want)
