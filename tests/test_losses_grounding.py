"""Grounding losses (modules/losses/grounding.py) against slow references written with loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.sparse.csgraph import shortest_path

from modules.losses.grounding import (
    gaussian_window,
    geodesic_distances,
    geodesic_weights,
    iou_scaled_bce,
    knn_graph,
    proposals,
    temporal_iou,
    weighted_nce,
)


def test_proposals_are_every_moment_once():
    first, last = proposals(5)
    pairs = set(zip(first.tolist(), last.tolist(), strict=True))
    assert len(first) == 15 and pairs == {(i, j) for i in range(5) for j in range(i, 5)}


def test_temporal_iou_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(20, 2, generator=g).sort(dim=1).values
    b = torch.rand(20, 2, generator=g).sort(dim=1).values
    got = temporal_iou(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
    for k in range(20):
        (s1, e1), (s2, e2) = a[k].tolist(), b[k].tolist()
        inter = max(0.0, min(e1, e2) - max(s1, s2))
        assert got[k].item() == pytest.approx(inter / (max(e1, e2) - min(s1, s2)), abs=1e-6)
    assert (
        temporal_iou(torch.tensor(0.2), torch.tensor(0.5), torch.tensor(0.2), torch.tensor(0.5))
        == 1
    )
    assert (
        temporal_iou(torch.tensor(0.0), torch.tensor(0.2), torch.tensor(0.5), torch.tensor(0.6))
        == 0
    )


def test_iou_scaled_bce_matches_a_loop():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    iou = torch.tensor([[0.9, 0.3, 0.6], [0.5, 1.0, 0.75]])
    total = 0.0
    for b in range(2):
        for p in range(3):
            y = min(max((iou[b, p].item() - 0.5) / 0.5, 0.0), 1.0)
            q = 1 / (1 + math.exp(-logits[b, p].item()))
            total += -(y * math.log(q) + (1 - y) * math.log(1 - q))
    assert iou_scaled_bce(logits, iou, 0.5, 1.0).item() == pytest.approx(total / 6, rel=1e-6)


def test_geodesic_equals_euclidean_on_evenly_spaced_collinear_points():
    # spec test: along a line every shortest path follows the line
    points = torch.linspace(0, 1, 9)[:, None] * torch.tensor([[3.0, 4.0]])
    dist = geodesic_distances(points[None], torch.tensor([2]), k=2)
    assert torch.allclose(dist[0], (points - points[2]).norm(dim=1), atol=1e-6)


def test_geodesic_matches_dijkstra_on_the_knn_graph():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 12, 4, generator=g, dtype=torch.float64)
    source = torch.tensor([0, 5, 11])
    got = geodesic_distances(x, source, k=3)
    for b in range(3):
        d = torch.cdist(x[b], x[b]).numpy()
        graph = np.zeros_like(d)  # the symmetric k-NN graph, built with loops
        for i in range(12):
            for j in np.argsort(d[i])[1:4]:
                graph[i, j] = graph[j, i] = d[i, j]
        want = shortest_path(graph, directed=False, indices=int(source[b]))
        want[~np.isfinite(want)] = want[np.isfinite(want)].max()
        assert np.allclose(got[b].numpy(), want)
    # the geodesic is never shorter than the straight line
    assert (got >= torch.cdist(x, x)[torch.arange(3), source] - 1e-9).all()


def test_unreached_points_get_the_row_maximum():
    # two far clusters, k = 1: the graph has two components
    x = torch.tensor([[[0.0], [0.1], [10.0], [10.2]]])
    dist = geodesic_distances(x, torch.tensor([0]), k=1)
    assert torch.allclose(dist, torch.tensor([[0.0, 0.1, 0.1, 0.1]]))
    assert torch.isinf(knn_graph(x, 1)[0, 0, 2])


def test_geodesic_weights_mean_one_and_monotone():
    dist = torch.tensor([[0.0, 1.0, 2.0, 5.0], [3.0, 3.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    positive = torch.tensor([0, 2, 1])
    w = geodesic_weights(dist, positive)
    assert torch.allclose(w[0], torch.tensor([1.0, 0.375, 0.75, 1.875]))
    assert torch.allclose(w[1], torch.ones(4))  # equal distances: plain InfoNCE
    assert torch.allclose(w[2], torch.ones(4))  # nothing to tell apart: weight 1
    negatives = w[0, 1:]
    assert negatives.mean() == pytest.approx(1.0) and (negatives.diff() > 0).all()


def _nce_reference(logits, positive, weights):
    total = 0.0
    for b in range(logits.shape[0]):
        pos = positive[b].item()
        denominator = math.exp(logits[b, pos].item())
        for k in range(logits.shape[1]):
            if k != pos:
                denominator += weights[b, k].item() * math.exp(logits[b, k].item())
        total += -(logits[b, pos].item() - math.log(denominator))
    return total / logits.shape[0]


def test_weighted_nce_matches_a_loop_and_is_infonce_with_unit_weights():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 7, generator=g, dtype=torch.float64) * 3
    positive = torch.tensor([0, 3, 6, 2])
    weights = torch.rand(4, 7, generator=g, dtype=torch.float64) * 2
    assert weighted_nce(logits, positive, weights).item() == pytest.approx(
        _nce_reference(logits, positive, weights), rel=1e-10
    )
    ones = torch.ones_like(logits)
    assert torch.allclose(weighted_nce(logits, positive, ones), F.cross_entropy(logits, positive))
    # a negative of weight 0 is the same as leaving it out
    weights[0, 1] = 0.0
    kept = [k for k in range(7) if k != 1]
    row = weighted_nce(logits[:1], positive[:1], weights[:1])
    dropped = weighted_nce(logits[:1, kept], positive[:1], weights[:1, kept])
    assert row.item() == pytest.approx(dropped.item(), rel=1e-10)


def test_weighted_nce_gradient_and_no_gradient_through_weights():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    weights = (torch.rand(3, 5, generator=g, dtype=torch.float64) + 0.1).requires_grad_()
    positive = torch.tensor([1, 0, 4])
    assert torch.autograd.gradcheck(lambda x: weighted_nce(x, positive, weights), (logits,))
    weighted_nce(logits, positive, weights).backward()
    assert weights.grad is None
    # the positive's logit is pulled up, the negatives' pushed down
    assert (logits.grad[torch.arange(3), positive] < 0).all()


def test_gaussian_window_has_unit_mass_and_peaks_at_its_centre():
    centre, width = torch.tensor([0.25, 0.5, 0.9]), torch.tensor([0.2, 0.5, 0.1])
    w = gaussian_window(centre, width, 16, 4.0)
    assert torch.allclose(w.sum(dim=1), torch.ones(3))
    times = (torch.arange(16) + 0.5) / 16
    assert torch.equal(w.argmax(dim=1), (times[None] - centre[:, None]).abs().argmin(dim=1))
    # symmetric about a centre between two frames; wider windows spread their mass
    mid = gaussian_window(torch.tensor([0.5]), torch.tensor([0.3]), 16, 4.0)[0]
    assert torch.allclose(mid, mid.flip(0))
    narrow, wide = gaussian_window(torch.tensor([0.5, 0.5]), torch.tensor([0.1, 0.8]), 16, 4.0)
    assert narrow.max() > wide.max()
