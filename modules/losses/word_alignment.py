"""Linear alignment of two word-embedding spaces (methods/part2.md Sec. 56, Si-En alignment:
the MUSE and fastText-alignment techniques its repository runs).

Rows are words: ``x`` ``[N, D]`` source vectors, ``y`` ``[N, D]`` target vectors; a map ``W``
``[D, D]`` sends ``x`` to ``x @ W.T``.

- :func:`procrustes`: ``W* = argmin_{W in O(d)} ||W X - Y||_F = U V^T`` with
  ``U S V^T = SVD(Y^T X)`` over the dictionary pairs (Conneau et al. 2018, "Word Translation
  Without Parallel Data", Sec. 2, MUSE ``Trainer.procrustes``; Smith et al. 2017);
- :func:`csls`: ``CSLS(Wx, y) = 2 cos(Wx, y) - r_T(Wx) - r_S(y)``, ``r_T(Wx)`` the mean cosine of
  ``Wx`` to its ``k`` nearest target words and ``r_S(y)`` that of ``y`` to its ``k`` nearest
  mapped source words (Conneau et al. 2018, Eq. 6; k = 10);
- :func:`mutual_csls_pairs` and :func:`refined_procrustes`: MUSE's refinement (``supervised.py``
  defaults ``n_refinement 5``, ``dico_build S2T&T2S``, ``dico_method csls_knn_10``): Procrustes
  on the seed dictionary, then ``refinements`` times: the dictionary of mutual CSLS nearest
  neighbours of the mapped spaces (it replaces the seed dictionary), Procrustes on it;
- :func:`rcsls_loss`: RCSLS (Joulin et al. 2018, "Loss in Translation", Eq. 3; fastText
  ``alignment/align.py`` ``rcsls``): the mean over dictionary pairs of
  ``-2 (W x_i)^T y_i + (1/k) sum_{y_j in N_Y(W x_i)} (W x_i)^T y_j
  + (1/k) sum_{W x_j in N_X(y_i)} (W x_j)^T y_i``, the neighbourhoods over the whole vocabularies
  (``--maxneg``) and including the pair's own word, as the official ``getknn``. It is a
  per-pair loss: a DDP rank's mean over its pairs averages to the one-process value.

Cosines are of L2-normalised vectors; callers normalise the tables first (fastText
``load_vectors`` does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def procrustes(x: Tensor, y: Tensor) -> Tensor:
    """The orthogonal ``W`` ``[D, D]`` minimising ``||x W^T - y||_F`` over paired rows."""
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"x and y must both be [N, D], got {tuple(x.shape)}, {tuple(y.shape)}")
    u, _, vh = torch.linalg.svd(y.T @ x)
    return u @ vh


def mean_top_k(similarity: Tensor, k: int) -> Tensor:
    """Per row, the mean of its ``k`` largest values (``k`` capped at the row length)."""
    return similarity.topk(min(k, similarity.shape[1]), dim=1).values.mean(dim=1)


def csls(mapped: Tensor, target: Tensor, k: int = 10) -> Tensor:
    """CSLS scores ``[Ns, Nt]`` of L2-normalised mapped source rows against target rows."""
    cos = mapped @ target.T
    return 2 * cos - mean_top_k(cos, k)[:, None] - mean_top_k(cos.T, k)[None, :]


def mutual_csls_pairs(mapped: Tensor, target: Tensor, k: int = 10) -> Tensor:
    """``[P, 2]`` (source row, target row) pairs that are each other's CSLS nearest neighbour."""
    scores = csls(mapped, target, k)
    forward, backward = scores.argmax(dim=1), scores.argmax(dim=0)
    source = torch.arange(len(mapped), device=mapped.device)
    mutual = backward[forward] == source
    return torch.stack([source[mutual], forward[mutual]], dim=1)


def refined_procrustes(
    source: Tensor, target: Tensor, pairs: Tensor, refinements: int = 5, k: int = 10
) -> Tensor:
    """Procrustes on the seed ``pairs`` ``[P, 2]`` (rows of the L2-normalised tables
    ``source``, ``target``), then ``refinements`` rounds of Procrustes on the mutual CSLS
    nearest neighbours of the mapped spaces (MUSE's supervised refinement)."""
    w = procrustes(source[pairs[:, 0]], target[pairs[:, 1]])
    for _ in range(refinements):
        induced = mutual_csls_pairs(F.normalize(source @ w.T, dim=1), target, k)
        w = procrustes(source[induced[:, 0]], target[induced[:, 1]])
    return w


def rcsls_loss(
    x: Tensor, y: Tensor, source: Tensor, target: Tensor, w: Tensor, k: int = 10
) -> Tensor:
    """RCSLS of the dictionary pairs ``(x, y)`` ``[B, D]`` under map ``w``; ``source``
    ``[Ns, D]`` and ``target`` ``[Nt, D]`` are the vocabularies the neighbourhoods range over."""
    mapped = x @ w.T
    fit = 2 * (mapped * y).sum(dim=1)
    near_target = mean_top_k(mapped @ target.T, k)
    near_source = mean_top_k(y @ (source @ w.T).T, k)
    return (near_target + near_source - fit).mean()
