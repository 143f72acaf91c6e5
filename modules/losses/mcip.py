"""MCIP's text objective (Schall et al., SISAP 2024; code Visual-Computing/MCIP,
``src/gpr-ft``): retrieved pseudo-captions and the multi-caption ArcFace.

- :func:`retrieve_captions` is ``create_pseudo_captions.py::create_pseudo_captions``: every
  training image gets the ``k = 20`` captions of a caption pool nearest to it by cosine
  (``evaluation/utils.py::get_sorted_distances``, top-k of image · text), kept where the
  similarity exceeds ``sim_th`` (``MCIP.sim_th: 0.27`` in ``config/SigLIP400_MCIP_AdamW_384.yaml``).
- :func:`multi_caption_arcface_loss` is ``loss/loss.py::MultiLabelArcMarginProductForText`` with
  ``TextSoftTargetCrossEntropy``: the columns are the retrieved captions of every image of the
  batch (empty ones dropped), the margin goes on each image's own captions, the target is
  uniform over them (``one_hot / one_hot.sum(1)``, ``nan_to_num``: a row without captions has
  target 0), and the loss per row is

  ``L_i = Σ_j -t_ij log p_ij + w · max_j [-(1 - t_ij) log p_ij]``,  ``w = 0.1``,

  ``p_i = softmax(s · margin_logits)`` (``s = 30``, ``m = 0.1``: ``main.py``'s
  ``--arcface_scale`` / ``--arcface_margin`` defaults), averaged over rows. ⚠ As written in the
  code, the "max-negative" term weighs every column by ``1 - t_ij`` (a positive of an image with
  n captions by ``1 - 1/n``, not 0) and takes the LARGEST ``-log p``, i.e. the least likely
  column: it raises the probability of the caption the image is furthest from (a label-smoothing-
  like floor), rather than pushing away the hardest negative.

``train_with_text.py`` adds it to the class ArcFace (``ArcMarginProduct`` on learned proxies,
:func:`modules.losses.metric_learning.margin_softmax_loss`) as ``0.75 · class + 0.25 · text``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.distributed import gather_no_grad, rank
from modules.losses.metric_learning import margin_logits_where


@torch.no_grad()
def retrieve_captions(
    images: Tensor, captions: Tensor, k: int = 20, threshold: float = 0.27
) -> tuple[Tensor, Tensor]:
    """``(indices [N, k'], keep [N, k'])``: per image of ``images`` [N, D] the ``k' = min(k, P)``
    captions of ``captions`` [P, D] with the highest cosine, best first, and whether each
    exceeds ``threshold`` (MCIP ``create_pseudo_captions``; both sides L2-normalised here)."""
    sims = F.normalize(images, dim=-1) @ F.normalize(captions, dim=-1).T
    values, indices = sims.topk(min(k, captions.shape[0]), dim=1, largest=True, sorted=True)
    return indices, values > threshold


def multi_caption_targets(mask: Tensor, first_row: int, rows: int) -> tuple[Tensor, Tensor]:
    """``(positive [rows, T] bool, owner [T])`` for the kept captions of ``mask`` [R, K]
    (row-major, as MCIP's ``torch.vstack`` of each image's list): rows ``first_row ..`` own
    the captions of their own mask row (MCIP ``transform_class_list``)."""
    owner = torch.arange(mask.shape[0], device=mask.device)[:, None].expand_as(mask)[mask]
    mine = torch.arange(first_row, first_row + rows, device=mask.device)
    return owner[None, :] == mine[:, None], owner


def multi_caption_arcface_loss(
    embeddings: Tensor,
    captions: Tensor,
    mask: Tensor,
    scale: float = 30.0,
    margin: float = 0.1,
    max_negative_weight: float = 0.1,
    kind: str = "arc",
) -> Tensor:
    """MCIP's multi-caption text ArcFace (module docstring) of this rank's images
    ``embeddings`` [B, D] against the retrieved captions of the whole batch.

    ``captions`` [B, K, D]: each row's retrieved caption embeddings (frozen text tower; padded),
    ``mask`` [B, K] (bool): which are real. Captions and masks are gathered from every rank
    without gradient (MCIP encodes them under ``no_grad``); the mean over ranks of the per-rank
    means is the one-process loss.
    """
    local = embeddings.shape[0]
    columns = gather_no_grad(captions)
    kept = gather_no_grad(mask)
    positive, _ = multi_caption_targets(kept, rank() * local, local)
    texts = F.normalize(columns[kept], dim=-1)
    if texts.shape[0] == 0:  # no caption in the whole batch: nothing to align with
        return embeddings.sum() * 0.0
    cosine = F.normalize(embeddings, dim=-1) @ texts.T
    log_p = F.log_softmax(scale * margin_logits_where(cosine, positive, margin, kind), dim=-1)
    counts = positive.sum(dim=1, keepdim=True).clamp_min(1)
    target = positive.to(log_p.dtype) / counts
    soft = -(target * log_p).sum(dim=-1)
    hardest = (-(1.0 - target) * log_p).max(dim=-1).values
    return (soft + max_negative_weight * hardest).mean()
