"""CoGenAV's contrastive synchronisation loss (Bai et al. 2025, arXiv 2505.03186, method
section; ``seq2seq_contrastive_loss`` of the released ``models/cogenav.py``).

For per-frame audio features ``A = (A_1..A_T)`` and lip features ``V = (V_1..V_T)`` of one
clip, the synchronisation score is the mean over time of the rectified frame cosines,

    d(A, V) = (1/T) sum_t ReLU(cos(A_t, V_t))  in [0, 1],

and a pair labelled ``y`` (1: in sync, 0: out of sync) costs the binary cross-entropy

    L_sync = -[y log d + (1 - y) log(1 - d)],

averaged over the pairs. Frames whose features point away from each other contribute 0 to
``d`` and get no gradient (the ReLU). The loss is per pair: nothing is gathered across ranks
(the mean over each rank's pairs, averaged by DDP, is the mean over all pairs for equal local
batches).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def sync_score(audio: Tensor, video: Tensor, eps: float = 1e-8) -> Tensor:
    """``d(A, V)`` [B] for per-frame features ``audio``, ``video`` [B, T, D]."""
    if audio.shape != video.shape or audio.ndim != 3:
        raise ValueError(
            f"audio and video must be [B, T, D] of one shape, got {tuple(audio.shape)} "
            f"and {tuple(video.shape)}"
        )
    return F.relu(F.cosine_similarity(audio, video, dim=-1, eps=eps)).mean(dim=-1)


def sync_loss(audio: Tensor, video: Tensor, label: Tensor) -> Tensor:
    """Mean BCE of ``d(audio, video)`` [B] against ``label`` [B] (1 in sync, 0 not).

    As the released code, ``F.binary_cross_entropy``: its logs are clamped at -100, so a pair
    scored exactly 0 (or 1) against the wrong label costs 100, not infinity."""
    score = sync_score(audio, video)
    return F.binary_cross_entropy(score, label.to(score.dtype))
