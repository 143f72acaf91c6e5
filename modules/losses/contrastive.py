"""Symmetric InfoNCE (CLIP) with id-defined positives, label smoothing and exact DDP negatives.

Notation follows methods/part1.md: `CE_soft(l, q) = -sum_j q_j log softmax(l)_j`,
`InfoNCE_{A->B} = (1/B) sum_i CE(s_i,: / tau, i)` and
`CLIP(A, B) = 1/2 [InfoNCE_{A->B} + InfoNCE_{B->A}]` (Radford et al., 2021).
Positives come from sample ids (e.g. `item_id`), so the five captions of one COCO image
are positives of each other, never negatives.

Under DDP every rank scores its local rows against the gathered global columns (one
`gather_with_grad` per modality) and averages over its local rows; DDP's gradient averaging
then equals the single-process gradient on the concatenated batch.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.distributed import gather_no_grad, gather_with_grad, rank, world_size
from modules.losses.chunked import choose_block_elements, chunked_symmetric_cross_entropy


def positive_mask(row_ids: Tensor, col_ids: Tensor) -> Tensor:
    """BoolTensor [R, C]: True where the row's id equals the column's id."""
    return row_ids[:, None] == col_ids[None, :]


def soft_target_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over rows of `-sum_j q_j log softmax(logits)_j` (CE_soft in the notation)."""
    return -(targets * logits.log_softmax(dim=1)).sum(dim=1).mean()


def multi_positive_targets(
    row_ids: Tensor,
    col_ids: Tensor,
    label_smoothing: float = 0.0,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Targets [R, C]: each row uniform over its positives, then `(1 - eps) q + eps / C`.

    With one positive per row this is exactly the target of `F.cross_entropy(...,
    label_smoothing=eps)`. A row without any positive gets only the smoothing mass.
    """
    mask = positive_mask(row_ids, col_ids).to(dtype or torch.get_default_dtype())
    targets = mask / mask.sum(dim=1, keepdim=True).clamp_min(1.0)
    if label_smoothing:
        targets = (1.0 - label_smoothing) * targets + label_smoothing / targets.shape[1]
    return targets


def local_ids(ids: Tensor | None, batch_size: int, device: torch.device) -> Tensor:
    """This rank's sample ids [b]: `ids`, or the global positions `rank * b + arange(b)` when
    `None` (one positive per pair: a local row's positive is its own pair among the gathered
    columns)."""
    if ids is None:
        return rank() * batch_size + torch.arange(batch_size, device=device)
    assert ids.shape == (batch_size,), f"ids must have shape [{batch_size}], got {tuple(ids.shape)}"
    return ids


def row_and_column_ids(
    ids: Tensor | None, batch_size: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """(local row ids [b], global column ids [world*b]) from :func:`local_ids`."""
    rows = local_ids(ids, batch_size, device)
    if ids is None:  # the gathered positions, without a collective
        return rows, torch.arange(world_size() * batch_size, device=device)
    return rows, gather_no_grad(rows)


def clip_loss(
    image: Tensor,
    text: Tensor,
    logit_scale: Tensor | float,
    ids: Tensor | None = None,
    label_smoothing: float = 0.0,
    block_elements: int | None = None,
) -> Tensor:
    """Symmetric InfoNCE `1/2 [InfoNCE_{I->T} + InfoNCE_{T->I}]` with logits `scale * <i, t>`.

    `image`, `text`: local [B, D] features, L2-normalised by the caller. `logit_scale`: 1/tau,
    already exponentiated. `ids` [B]: equal ids are positives (targets uniform over them);
    `None` means the diagonal. Under DDP: local rows x gathered global columns, each
    direction averaged over the local rows. `block_elements`: how the logits are computed,
    with the same value and gradients either way: `None` chooses
    (:func:`~modules.losses.chunked.choose_block_elements`: the full matrix for small
    batches, tiles above), `0` the full B x B matrix, `N > 0` tiles of at most N logits
    (chunked.py), never holding the matrix.
    """
    assert image.shape == text.shape, f"image {tuple(image.shape)} vs text {tuple(text.shape)}"
    batch = image.shape[0]
    if block_elements is None:
        block_elements = choose_block_elements(batch, world_size() * batch, world_size())
    if block_elements:
        own = local_ids(ids, batch, image.device)
        return chunked_symmetric_cross_entropy(
            image, text, logit_scale, own, label_smoothing, block_elements
        )
    if world_size() == 1:  # one matrix serves both directions
        logits_i2t = logit_scale * image @ text.T
        logits_t2i = logits_i2t.T
    else:
        logits_i2t = logit_scale * image @ gather_with_grad(text).T
        logits_t2i = logit_scale * text @ gather_with_grad(image).T
    if ids is None:
        target = rank() * batch + torch.arange(batch, device=image.device)
        loss_i2t = F.cross_entropy(logits_i2t, target, label_smoothing=label_smoothing)
        loss_t2i = F.cross_entropy(logits_t2i, target, label_smoothing=label_smoothing)
    else:
        rows, cols = row_and_column_ids(ids, batch, image.device)
        targets = multi_positive_targets(rows, cols, label_smoothing, dtype=logits_i2t.dtype)
        loss_i2t = soft_target_cross_entropy(logits_i2t, targets)
        loss_t2i = soft_target_cross_entropy(logits_t2i, targets)
    return 0.5 * (loss_i2t + loss_t2i)


def align_loss(
    image: Tensor,
    text: Tensor,
    logit_scale: Tensor | float,
    ids: Tensor | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "sum",
    block_elements: int | None = None,
) -> Tensor:
    """ALIGN's loss (Jia et al. 2021, Sec. 3.2): ``L_i2t + L_t2i`` for ``reduction="sum"``, their
    mean (exactly :func:`clip_loss`) for ``"mean"``; same arguments otherwise."""
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    loss = clip_loss(image, text, logit_scale, ids, label_smoothing, block_elements)
    return 2.0 * loss if reduction == "sum" else loss
