"""ConR, the contrastive regulariser for deep imbalanced regression (Keramati, Meng and Evans,
ICLR 2024), transcribed from ``ConR`` in BorealisAI/ConR ``agedb-dir/loss.py`` (called from
``agedb-dir/train.py`` on the two augmented views concatenated, targets and LDS weights
repeated, predictions ``outputs_c.clone().detach()``).

Rows i and columns j of the 2B samples: ``f`` the L2-normalised features, ``s_ij = <f_i, f_j>``,
``y`` targets, ``ŷ`` detached predictions, ``w`` per-sample weights (1 without reweighting):

    P_i = {j != i : |y_i - y_j| <= omega}                       (positives)
    N_i = {j : |y_i - y_j| > omega  and  |ŷ_i - ŷ_j| <= omega}  ("wrong proximity" negatives)
    S_ij = w_i exp(eta |y_i - y_j|)                             (pushing weight)
    D_i = sum_{p in P_i} exp(s_ip / tau) + sum_{n in N_i} S_in exp(s_in / tau) [+ c_i]
    L_i = 1/|P_i| sum_{p in P_i} (log D_i - s_ip / tau)
    L = mean_i w_i L_i 1[N_i != ∅]

How the code's details were resolved:
- tau: the official function overwrites its ``t`` argument with 0.07 (the CLI default 0.2
  never reaches it), so ``temperature=0.07``; omega = ``w`` = 1 and eta = ``e`` = 0.01.
- the denominator quirk: the official denominator is ``exp(pos).sum(1)`` with ``pos = prod *
  pos_i``, i.e. every non-positive column (the anchor itself, the negatives and the ignored
  columns) adds ``exp(0) = 1``: ``c_i = (number of columns) - |P_i|``. ``official_denominator``
  (default True) reproduces it; False gives the positives-plus-negatives form above without
  ``c_i``. Under DDP the column count is the global 2B, as in one process.
- the official ``eta = e * weights`` is unused there; only ``w_i`` (the row's weight) enters
  S and the final mean, as here.
- rows without positives: 0/0 = NaN in the official code; they contribute 0 here. They cannot
  occur with two views (a sample's other view is always a positive).
- ``-log(exp(a) / D)`` is computed as ``logsumexp - a`` (same value, no overflow).
DDP: this rank's rows against the gathered columns (``gather_with_grad`` of the features,
``gather_no_grad`` of targets and predictions); the mean over local rows, averaged over ranks,
is the one-process mean (the official training is single-process ``DataParallel``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.distributed import gather_no_grad, gather_with_grad
from modules.losses.contrastive import row_and_column_ids


def conr_loss(
    features: Tensor,
    targets: Tensor,
    predictions: Tensor,
    weights: Tensor | None = None,
    omega: float = 1.0,
    eta: float = 0.01,
    temperature: float = 0.07,
    official_denominator: bool = True,
) -> Tensor:
    """ConR on this rank's rows: ``features`` [n, D] (not necessarily normalised; both views'
    rows, e.g. ``cat(view0, view1)``), ``targets`` and ``predictions`` [n] (or [n, 1];
    predictions are detached here), ``weights`` [n] per-sample weights (``None``: 1)."""
    n = features.shape[0]
    targets = targets.reshape(n).to(features.dtype)  # integer targets (ages) work too
    predictions = predictions.detach().reshape(n).to(features.dtype)
    weights = torch.ones_like(targets) if weights is None else weights.reshape(n)
    rows, cols = row_and_column_ids(None, n, features.device)
    f = F.normalize(features, dim=1)
    logits = f @ gather_with_grad(f).T / temperature  # [n, N]
    label_distance = (targets[:, None] - gather_no_grad(targets)[None, :]).abs()
    prediction_distance = (predictions[:, None] - gather_no_grad(predictions)[None, :]).abs()
    close = label_distance <= omega
    positives = close & (rows[:, None] != cols[None, :])
    negatives = ~close & (prediction_distance <= omega)
    log_push = torch.log(weights)[:, None] + eta * label_distance  # log S_ij
    terms = torch.where(positives, logits, torch.where(negatives, logits + log_push, -math.inf))
    count = positives.sum(dim=1, keepdim=True)
    # A row without positives contributes 0; any finite terms keep its logsumexp (and grad) finite.
    terms = torch.where(count > 0, terms, logits)
    log_denominator = terms.logsumexp(dim=1, keepdim=True)
    if official_denominator:
        ones = (~positives).sum(dim=1, keepdim=True).to(logits.dtype)  # >= 1: the anchor itself
        log_denominator = torch.logaddexp(log_denominator, ones.log())
    per_positive = torch.where(positives, log_denominator - logits, 0.0)
    per_row = per_positive.sum(dim=1) / count.squeeze(1).clamp_min(1)
    return (weights * per_row * negatives.any(dim=1)).mean()
