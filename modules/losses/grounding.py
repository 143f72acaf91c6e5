"""Losses and geometry of temporal grounding: moment proposals, temporal IoU, the IoU-scaled
BCE of 2D-TAN (Zhang et al., AAAI 2020, Sec. 3.4; MMN and G2L's ``L_VG``), geodesic distances
on a k-NN graph of moment features and the geodesic-weighted sentence-moment contrast
(G2L, Li et al., ICCV 2023, ``L_GCL``; methods/part1.md section 15), and the unit-mass
Gaussian window of CRA's grounding (Chen et al., CVPR 2025; section 20).

Every function works on local rows only (each query against the moments of its own clip), so
a batch split over ranks gives the mean of the ranks' losses: no gather is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def proposals(num_frames: int) -> tuple[Tensor, Tensor]:
    """The first and last frame (inclusive) of every moment ``i <= j`` of a clip of
    ``num_frames`` frames (the upper triangle of 2D-TAN's map), int64 [P], P = T(T+1)/2."""
    first, last = torch.triu_indices(num_frames, num_frames)
    return first, last


def temporal_iou(start_a: Tensor, end_a: Tensor, start_b: Tensor, end_b: Tensor) -> Tensor:
    """Intersection over union of intervals ``[start, end]`` (broadcast); 0 for empty unions."""
    inter = (torch.minimum(end_a, end_b) - torch.maximum(start_a, start_b)).clamp_min(0)
    union = torch.maximum(end_a, end_b) - torch.minimum(start_a, start_b)
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


def iou_targets(iou: Tensor, iou_min: float, iou_max: float) -> Tensor:
    """2D-TAN's soft labels: 0 up to ``iou_min``, 1 from ``iou_max``, linear in between."""
    return ((iou - iou_min) / (iou_max - iou_min)).clamp(0.0, 1.0)


def iou_scaled_bce(logits: Tensor, iou: Tensor, iou_min: float, iou_max: float) -> Tensor:
    """``L_VG``: mean over queries and moments of BCE(sigmoid(logit), iou_targets(iou)).

    ``logits``, ``iou``: [B, P] (each query's scores and IoUs with its moment)."""
    return F.binary_cross_entropy_with_logits(logits, iou_targets(iou, iou_min, iou_max))


def knn_graph(features: Tensor, k: int) -> Tensor:
    """Edge lengths [B, P, P] of the symmetric k-NN graph of each row's P points (Euclidean
    distance; inf where there is no edge; 0 on the diagonal)."""
    dist = torch.cdist(features, features)
    p = features.shape[1]
    k = min(k, p - 1)
    near = dist.topk(k + 1, dim=-1, largest=False).indices  # itself included
    edge = torch.zeros_like(dist, dtype=torch.bool).scatter_(-1, near, True)
    edge = edge | edge.transpose(1, 2)
    return torch.where(edge, dist, torch.full_like(dist, torch.inf))


def geodesic_distances(features: Tensor, source: Tensor, k: int) -> Tensor:
    """Shortest-path length [B, P] from point ``source[b]`` to every point of row ``b`` on
    the k-NN graph of ``features`` [B, P, D] (Bellman-Ford relaxation until nothing changes:
    the geodesic distance on the data manifold, Tenenbaum et al. 2000). Points the graph does
    not reach get the largest finite distance of their row."""
    edges = knn_graph(features, k)
    dist = torch.full(edges.shape[:2], torch.inf, dtype=edges.dtype, device=edges.device)
    dist.scatter_(1, source[:, None], 0.0)
    for _ in range(edges.shape[1]):
        relaxed = torch.minimum(dist, (dist[:, :, None] + edges).amin(dim=1))
        if torch.equal(relaxed, dist):
            break
        dist = relaxed
    finite = torch.where(dist.isfinite(), dist, torch.zeros_like(dist))
    return torch.where(dist.isfinite(), dist, finite.amax(dim=1, keepdim=True))


def geodesic_weights(distances: Tensor, positive: Tensor) -> Tensor:
    """Negative weights [B, P] proportional to the geodesic distance from the positive,
    scaled to mean 1 over each row's negatives (so equal distances give plain InfoNCE);
    the positive's own entry is 1 (unused by :func:`weighted_nce`). A row whose negatives are
    all at distance 0 gets weight 1 everywhere."""
    negative = torch.ones_like(distances, dtype=torch.bool).scatter_(1, positive[:, None], False)
    mean = (distances * negative).sum(1, keepdim=True) / negative.sum(1, keepdim=True)
    weights = torch.where(mean > 0, distances / mean.clamp_min(1e-12), torch.ones_like(distances))
    return torch.where(negative, weights, torch.ones_like(weights))


def weighted_nce(logits: Tensor, positive: Tensor, weights: Tensor) -> Tensor:
    """``L_GCL`` (⚠ reconstructed): mean over rows of
    ``-log exp(l_pos) / (exp(l_pos) + sum_{k != pos} w_k exp(l_k))``.

    ``logits`` [B, P] (scaled similarities of each query to its clip's moments), ``positive``
    [B] (the true moment), ``weights`` [B, P] (>= 0, no gradient; the positive's entry is
    ignored). All weights 1 is InfoNCE (cross-entropy with the positive as the label)."""
    log_w = torch.log(weights.detach().clamp_min(1e-30))
    log_w = log_w.scatter(1, positive[:, None], 0.0)
    shifted = logits + log_w
    return (shifted.logsumexp(dim=1) - logits.gather(1, positive[:, None]).squeeze(1)).mean()


def gaussian_window(centre: Tensor, width: Tensor, num_frames: int, sigma_ratio: float) -> Tensor:
    """Weights [B, T] of a Gaussian over the frame centres ``(t + 1/2) / T`` with mean
    ``centre`` [B] and standard deviation ``width / sigma_ratio`` (fractions of the clip),
    normalised to unit mass: CRA's Gaussian-smoothed grounding window (⚠ its exact smoothing)."""
    times = (torch.arange(num_frames, device=centre.device, dtype=centre.dtype) + 0.5) / num_frames
    sigma = (width / sigma_ratio).clamp_min(0.5 / num_frames)[:, None]
    return torch.softmax(-((times[None] - centre[:, None]) ** 2) / (2 * sigma**2), dim=1)
