"""Losses of a causal language model: next-token cross-entropy (MLE) and SimCTG's token-level
contrastive objective (Su et al., "A Contrastive Framework for Neural Text Generation", NeurIPS
2022, Eq. 2-3), which Contrastive Search Is What You Need (Su & Collier 2023) discusses as the
way to make an anisotropic model's states isotropic (methods/part2.md section 60: background,
not that paper's own objective; built here as the ``simctg`` term, off by default).

Eq. 2, for one sequence ``x`` of ``|x|`` tokens with last-layer states ``h`` and cosine ``s``:

    L_CL = 1 / (|x| (|x| - 1)) sum_i sum_{j != i} max(0, rho - s(h_i, h_i) + s(h_i, h_j))

Following the official ``SimCTGLoss.contrastive_loss`` (yxuansu/SimCTG
``simctg/lossfunction.py``): padded tokens are left out, and the hinge terms are summed over
the whole batch and divided by the number of valid (i, j) pairs of the batch (not averaged per
sequence); rho = 0.5 (the paper's margin). ``s(h_i, h_i) = 1``.

Both losses are per-token (per-pair) means over the batch. Under DDP each rank divides its own
sum by the GLOBAL count of tokens (pairs) times the world size (the count gathered without
gradient), so the ranks' average, which DDP takes, is exactly the one-process mean over the
whole batch however the document lengths fall across ranks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.distributed import gather_no_grad, world_size


def global_mean(total: Tensor, count: Tensor) -> Tensor:
    """This rank's ``total`` divided by the count summed over ranks, times the world size (0
    when there is nothing to count anywhere)."""
    counts = gather_no_grad(count.reshape(1).long()).sum()
    return total * world_size() / counts.clamp_min(1).to(total.dtype)


def next_token_loss(logits: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
    """Mean cross-entropy of predicting ``ids[:, t + 1]`` from ``logits[:, t]`` over the real
    next tokens (``mask [B, T]``: True on real tokens; 0 without any). ``logits [B, T, V]``,
    ``ids [B, T]``."""
    target = ids[:, 1:].masked_fill(~mask[:, 1:], -100)
    total = F.cross_entropy(
        logits[:, :-1].flatten(0, 1), target.flatten(), ignore_index=-100, reduction="sum"
    )
    return global_mean(total, (target != -100).sum())


def simctg_loss(hidden: Tensor, mask: Tensor, margin: float = 0.5) -> Tensor:
    """SimCTG's token-level margin loss (module docstring): ``hidden [B, T, H]`` last-layer
    states, ``mask [B, T]`` True on real tokens. 0 when no sequence has two real tokens."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    unit = F.normalize(hidden, dim=-1)
    cosine = unit @ unit.mT  # [B, T, T]
    gold = cosine.diagonal(dim1=1, dim2=2).unsqueeze(-1)  # s(h_i, h_i)
    hinge = F.relu(margin - (gold - cosine))
    valid = mask.unsqueeze(2) & mask.unsqueeze(1)
    valid &= ~torch.eye(mask.shape[1], dtype=torch.bool, device=mask.device)
    return global_mean((hinge * valid).sum(), valid.sum())
