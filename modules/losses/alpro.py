"""ALPRO's losses besides VTC (Li et al., "Align and Prompt: Video-and-Language Pre-training with
Entity Prompts", CVPR 2022; official code ``salesforce/ALPRO``, ``src/modeling/alpro_models.py``).

VTC is CLIP's symmetric InfoNCE and is :func:`modules.losses.contrastive.clip_loss`. The paper's
equation and section numbers could not be checked here (no paper text in reach), so the
formulas are written out instead. Here:

- :func:`sample_hard_negatives`: VTM's negatives (as in ALBEF): for each row one
  column drawn with probability ``softmax(sim)`` over the columns that are not its positives;
- :func:`vtm_loss`: the binary cross-entropy of the matching head on positive pairs and the two
  sets of negatives (2-way softmax CE, as the code);
- :func:`masked_token_mean`: the mean of per-token (or per-sample) losses over the selected
  entries of the *global* batch, so MLM (masked tokens) and PEM (confident crops) average as one
  process on the whole batch would (the code averages over the local batch);
- :func:`entity_prompt_features`: prompt features ``P`` = the template ensemble of each entity
  (the mean of the normalised prompt embeddings, renormalised);
- :func:`entity_pseudo_labels`: the prompter's soft entity labels of crops,
  ``q = softmax(f_crop . P^T / tau)`` and the mask of confident crops;
- :func:`pem_loss`: ``L_PEM = -sum_k q_k log p_k`` over confident crops.

Confidence (⚠): the code's comment says a crop is ignored when the prompter is unconfident
(max probability < 0.2) but it compares the *argmax index* with 0.2. The max probability is
compared here, the intended rule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.distributed import gather_no_grad, world_size


def sample_hard_negatives(
    sim: Tensor, positives: Tensor, generators: list[torch.Generator]
) -> Tensor:
    """Column index [R] of one hard negative per row of ``sim`` [R, C], drawn with probability
    ``softmax(sim_i)`` restricted to the columns where ``positives`` [R, C] is False (ALBEF's /
    ALPRO's ``weights = softmax(sim); weights[positive] = 0; multinomial``). ``generators``: one
    per row, so a row's draw depends only on its own seed (the same under any batch split).
    A row whose columns are all positives gets a uniform draw among all columns."""
    with torch.no_grad():
        logits = sim.detach().float().masked_fill(positives, float("-inf"))
        logits = torch.where(positives.all(dim=1, keepdim=True), torch.zeros_like(logits), logits)
        weights = logits.softmax(dim=1)
        return torch.stack(
            [
                torch.multinomial(row.cpu(), 1, generator=g).to(sim.device)[0]
                for row, g in zip(weights, generators, strict=True)
            ]
        )


def vtm_loss(pos_logits: Tensor, neg_logits: Tensor) -> Tensor:
    """Mean 2-way cross-entropy over ``pos_logits`` [P, 2] (label 1, matched) and
    ``neg_logits`` [N, 2] (label 0), all rows weighted alike (``F.cross_entropy`` on the
    concatenation, as ALPRO's ``compute_vtm``)."""
    logits = torch.cat([pos_logits, neg_logits])
    labels = torch.cat(
        [
            torch.ones(len(pos_logits), dtype=torch.long, device=logits.device),
            torch.zeros(len(neg_logits), dtype=torch.long, device=logits.device),
        ]
    )
    return F.cross_entropy(logits, labels)


def masked_token_mean(values: Tensor, selected: Tensor) -> Tensor:
    """``sum(values[selected]) / (number selected over all ranks)``, times the world size, so
    that the DDP average of the ranks' results is the mean over the whole batch's selected
    entries. 0 (with a graph) when nothing is selected anywhere."""
    count = selected.sum().to(values.dtype).reshape(1)
    total = gather_no_grad(count).sum() if world_size() > 1 else count.sum()
    summed = (values * selected.to(values.dtype)).sum()
    return summed * world_size() / total.clamp_min(1.0)


def entity_prompt_features(prompts: Tensor, num_templates: int) -> Tensor:
    """Entity features [K, D] from L2-normalised prompt embeddings [K * M, D] (entity-major:
    the M templates of entity 0 first): mean over templates, L2-normalised."""
    if prompts.shape[0] % num_templates:
        raise ValueError(f"{prompts.shape[0]} prompts are not a multiple of {num_templates}")
    grouped = prompts.view(-1, num_templates, prompts.shape[-1])
    return F.normalize(grouped.mean(dim=1), dim=-1)


def entity_pseudo_labels(
    crops: Tensor, entities: Tensor, scale: Tensor | float, threshold: float
) -> tuple[Tensor, Tensor]:
    """(``q`` [B, K] = softmax(scale * crops . entities^T), confident [B] = max_k q_k >= threshold)
    for L2-normalised crop features [B, D] and entity features [K, D]; no gradient."""
    with torch.no_grad():
        q = (scale * crops @ entities.T).softmax(dim=1)
        return q, q.max(dim=1).values >= threshold


def pem_loss(logits: Tensor, targets: Tensor, confident: Tensor) -> Tensor:
    """``-sum_k q_k log softmax(logits)_k`` averaged over the confident rows of the global batch
    (:func:`masked_token_mean`): ALPRO's ``sum(CE[~ignore]) / (B - #ignored)``."""
    per_row = -(targets * logits.log_softmax(dim=1)).sum(dim=1)
    return masked_token_mean(per_row, confident)
