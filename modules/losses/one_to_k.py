"""1-to-K contrastive loss (CCRK: "Improving the Consistency in Cross-Lingual Cross-Modal
Retrieval with 1-to-K Contrastive Learning"; methods/part2.md Sec. 57; official code
``get_unialign_contrastive_loss`` in BUAADreamer/CCRK ``models/xvlm.py``).

Each image ``i`` has K captions ``t_{i,1..K}``, one per language; with logits
``S = s V T^T`` of shape ``B x KB`` (texts image-major: column ``(j, l)`` is ``j K + l``):

- image -> text: ``L_i2t = -(1/B) sum_i sum_k log softmax_{(j,l)}(S_i)[(i,k)]``, one softmax over
  all KB texts with all K translations positive at once (a multi-hot *sum* target, not a
  distribution divided by K);
- text -> image: ``L_t2i = -(1/KB) sum_{(i,k)} log softmax_j(S^T_{(i,k)})[i]``;
- ``L = (L_i2t + L_t2i) / (2K)`` (the code's default ``need_divm = 0`` divides the mean of the
  two directions by ``tsz = K``).

Both directions are :func:`~modules.losses.contrastive.soft_target_cross_entropy` with the
multi-positive targets of :func:`~modules.losses.contrastive.multi_positive_targets`: the sum
target is K times the uniform one, so ``L_i2t = K CE_soft(S, uniform)``. With K = 1 the loss is
:func:`~modules.losses.contrastive.clip_loss`. Under DDP every rank scores its local rows
against the gathered columns (one ``gather_with_grad`` per modality), as ``clip_loss`` does; the
official code instead computes the whole global matrix on every rank.
"""

from __future__ import annotations

import torch
from torch import Tensor

from modules.distributed import gather_with_grad
from modules.losses.contrastive import (
    clip_loss,
    multi_positive_targets,
    row_and_column_ids,
    soft_target_cross_entropy,
)


def one_to_k_loss(
    image: Tensor,
    text: Tensor,
    logit_scale: Tensor | float,
    ids: Tensor | None = None,
) -> Tensor:
    """``(L_i2t + L_t2i) / (2K)`` for local ``image`` [B, D] and ``text`` [B, K, D] (the K
    captions of each image), both L2-normalised by the caller; ``logit_scale`` is 1/tau.

    ``ids`` [B] (e.g. ``item_id``): equal ids are positives, so an image repeated in the batch
    has all the captions of its copies as positives; the image row's target then spreads the
    mass K over them (exactly the multi-hot sum when each image occurs once, and clip_loss's
    uniform target when K = 1). ``None``: each image's own K captions.
    """
    batch, k, dim = text.shape
    assert image.shape == (batch, dim), f"image {tuple(image.shape)} vs text {tuple(text.shape)}"
    texts = text.reshape(batch * k, dim)  # image-major: row i K + l is caption l of image i
    rows, cols = row_and_column_ids(ids, batch, image.device)
    logits_i2t = logit_scale * image @ gather_with_grad(texts).T  # [B, W B K]
    logits_t2i = logit_scale * texts @ gather_with_grad(image).T  # [B K, W B]
    sum_targets = k * multi_positive_targets(rows, cols.repeat_interleave(k), dtype=image.dtype)
    loss_i2t = soft_target_cross_entropy(logits_i2t, sum_targets)
    targets_t2i = multi_positive_targets(rows.repeat_interleave(k), cols, dtype=image.dtype)
    loss_t2i = soft_target_cross_entropy(logits_t2i, targets_t2i)
    return (loss_i2t + loss_t2i) / (2 * k)


def k_pairs_loss(
    image: Tensor,
    text: Tensor,
    logit_scale: Tensor | float,
    ids: Tensor | None = None,
) -> Tensor:
    """The equal-exposure 1-to-1 baseline of 1-to-K: each image paired with each of its K
    captions as K separate one-to-one pairs in the same step, ``(1/K) sum_k L_CLIP(I, T_k)``
    (``text`` [B, K, D]): every language gets as many text updates per step as under
    :func:`one_to_k_loss`, but each softmax holds one language only. ``ids`` as in
    :func:`~modules.losses.contrastive.clip_loss`."""
    losses = [clip_loss(image, text[:, k], logit_scale, ids=ids) for k in range(text.shape[1])]
    return torch.stack(losses).mean()
