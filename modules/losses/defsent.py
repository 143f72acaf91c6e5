"""DefSent+ (Liu, "DefSent+: Improving sentence embeddings of language models by projecting
definition sentences into a quasi-isotropic or isotropic vector space of unlimited dictionary
entries", arXiv 2405.16153, 2024; methods/part2.md section 46). Plain functions.

The spec marks the method UNCONFIRMED (only the abstract was at hand); the details here follow
the author's released code ``ryuliuxiaodong/DefSent-Plus``:

- an entry's embedding is the **average of the sentence embeddings of its definitions**
  (``GenerateEntryEmbeddings.py``: "AC", the average [CLS], or "AMP", the average mean-pooled
  state), so entries are not limited to single-token words (:func:`entry_embeddings`);
- the isotropic space (``ICA-transform.py``): every dimension standardised (``StandardScaler``),
  then FastICA with ``whiten='unit-variance'``, ``fun='logcosh'``, as many components as
  dimensions, and the result multiplied by 100 (:func:`isotropic_entries`). The whitening makes
  the covariance the identity (isotropic); the ICA rotation keeps it so. Without the transform
  (``raw``) the averaged entries are what we read as the quasi-isotropic space (averages of
  sentence embeddings instead of an LM's anisotropic word embeddings; the code trains on either
  weight file);
- the loss (``TrainEncoder.py``): the entry table is frozen and is the weight of a bias-free
  prediction layer, so the logits are plain dot products ``s(d) . e_k`` (no normalisation, no
  temperature: the factor 100 sets the sharpness) and the loss is cross-entropy against the
  definition's entry over **all** entries (:func:`entry_loss`).

Each rank holds the whole (frozen) entry table and its own definitions, so the batch mean over
ranks is the one-process loss without any gather.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def entry_embeddings(definitions: Tensor, entry_ids: Tensor, num_entries: int) -> Tensor:
    """The average [E, d] of the definition embeddings [N, d] of each entry (``entry_ids`` [N]
    in ``[0, num_entries)``); an entry without definitions is an error."""
    counts = torch.bincount(entry_ids, minlength=num_entries)
    if counts.numel() > num_entries:
        raise ValueError(f"entry ids reach {counts.numel() - 1}; there are {num_entries} entries")
    if (counts == 0).any():
        missing = int((counts == 0).nonzero()[0])
        raise ValueError(f"entry {missing} has no definition")
    sums = definitions.new_zeros(num_entries, definitions.shape[1]).index_add_(
        0, entry_ids, definitions
    )
    return sums / counts.unsqueeze(1).to(definitions.dtype)


def standardize(x: Tensor) -> Tensor:
    """Every column to mean 0 and (population) standard deviation 1 (``StandardScaler``); a
    constant column stays 0."""
    centred = x - x.mean(0)
    std = centred.pow(2).mean(0).sqrt()
    return centred / torch.where(std > 0, std, torch.ones_like(std))


def whiten(x: Tensor, rtol: float = 1e-9) -> Tensor:
    """PCA whitening: centred ``x`` [N, d] rotated onto its principal axes and scaled to unit
    variance, so that its (population) covariance is the identity [r, r]; ``r`` counts the
    directions whose variance exceeds ``rtol`` times the largest (r = d for N > d points in
    general position; fewer entries than dimensions span r <= N - 1 of them)."""
    n = x.shape[0]
    centred = x - x.mean(0)
    values, vectors = torch.linalg.eigh(centred.T @ centred / n)
    keep = values > rtol * values.max().clamp_min(torch.finfo(x.dtype).tiny)
    if not keep.any():
        raise ValueError("the entry embeddings are all equal: cannot whiten them")
    return centred @ vectors[:, keep] / values[keep].sqrt()


def fast_ica_rotation(
    white: Tensor,
    generator: torch.Generator | None = None,
    iterations: int = 200,
    tol: float = 1e-4,
) -> Tensor:
    """The orthogonal unmixing ``W`` [d, d] of whitened data [N, d] by symmetric FastICA with
    the logcosh contrast (``g = tanh``; Hyvarinen 1999, as scikit-learn's ``FastICA``):
    ``W <- E[g(W x) x^T] - diag(E[g'(W x)]) W``, then ``W <- (W W^T)^{-1/2} W``, until the
    rows stop turning (``max |1 - |diag(W_new W^T)|| < tol``). Sources: ``white @ W.T``."""
    d = white.shape[1]
    w = _decorrelate(torch.randn(d, d, generator=generator, dtype=white.dtype).to(white.device))
    for _ in range(iterations):
        projected = white @ w.T  # [N, d]
        g = torch.tanh(projected)
        g_prime = 1 - g.pow(2)
        new = _decorrelate(g.T @ white / white.shape[0] - g_prime.mean(0)[:, None] * w)
        converged = (1 - (new * w).sum(1).abs()).abs().max() < tol
        w = new
        if converged:
            break
    return w


def _decorrelate(w: Tensor) -> Tensor:
    """``(W W^T)^{-1/2} W``: the nearest orthogonal matrix (symmetric decorrelation)."""
    values, vectors = torch.linalg.eigh(w @ w.T)
    return vectors @ torch.diag(values.clamp_min(1e-12).rsqrt()) @ vectors.T @ w


def isotropic_entries(
    entries: Tensor,
    space: str,
    scale: float = 100.0,
    generator: torch.Generator | None = None,
    iterations: int = 200,
) -> Tensor:
    """The entry table in the space the definitions are projected into: ``raw`` (as averaged),
    ``whitened`` (standardised, then PCA-whitened) or ``ica`` (standardised, whitened, rotated
    onto FastICA's independent components: ``ICA-transform.py``); the two isotropic spaces are
    multiplied by ``scale`` (the code's 100). With fewer independent entries than dimensions
    the isotropic table spans only r < d of them (the rest is 0)."""
    if space == "raw":
        return entries
    if space not in ("whitened", "ica"):
        raise ValueError(f"entry space must be raw, whitened or ica, got {space!r}")
    white = whiten(standardize(entries))
    if space == "ica":
        white = white @ fast_ica_rotation(white, generator, iterations).T
    padded = white.new_zeros(entries.shape)
    padded[:, : white.shape[1]] = white
    return padded * scale


def entry_logits(sentences: Tensor, entries: Tensor) -> Tensor:
    """``s . e_k`` [B, E]: the bias-free prediction layer whose weight is the entry table."""
    return sentences @ entries.T


def entry_loss(sentences: Tensor, entries: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy of each definition's embedding [B, d] against its entry over every entry
    [E, d] (frozen: no gradient reaches the table)."""
    return F.cross_entropy(entry_logits(sentences, entries.detach()), targets)
