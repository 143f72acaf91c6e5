"""LFTL's query scores and adaptation losses (Lyu et al., "Learn from the Learnt: Source-Free
Active Domain Adaptation via Contrastive Sampling and Visual Persistence", ECCV 2024; official
code ``lyumengyao/lftl``: ``mining/contrastive_sampling.py``, ``mining/strategy.py``,
``mining/utils.py``, which these follow line by line where the paper is loose).

- **Contrastive Active Sampling (Sec. 3.2):** ``U = p_t + beta (p_t - p_{t-1})`` (the code's
  ``cd_ratio``), margin ``u = U^(1) - U^(2)``; the class term counts the pseudo-labels
  (``argmax p_t``) of the ``top_k`` samples of highest margin, ``w_c = count_c / max count``;
  ``score = u / max u + lambda_topk w_{y^}``; the ``n`` lowest scores are queried.
- **Visual Persistence-guided Adaptation (Sec. 3.3):** anchor memory ``m_a <- (1 - mu) m_a +
  mu e_a`` (mu = 0.9: the new embedding dominates); ``pi(x) = softmax_a cos(e_x, m_a)`` (no
  temperature); ``L_VPA = mean_x H(pi(x))``.
- **Information maximisation (SHOT):** ``L_IM = mean_x H(p_x) - H(mean_x p_x)``.

Entropies use the code's ``-p log(p + 1e-5)`` (``mining/utils.py: Entropy``). No term gathers
across ranks: the query runs on the whole pool on every rank, and L_VPA / L_IM are per-batch
means, as in the code (one GPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: The code's epsilon inside the logarithm of every entropy.
ENTROPY_EPS = 1e-5


def entropy(probs: Tensor) -> Tensor:
    """``-sum_c p_c log(p_c + eps)`` of each row of ``probs`` [N, C] -> [N]."""
    return -(probs * torch.log(probs + ENTROPY_EPS)).sum(dim=-1)


def margins(probs: Tensor, prev_probs: Tensor | None, beta: float) -> Tensor:
    """Top-1 minus top-2 of ``U = p_t + beta (p_t - p_{t-1})`` per row [N]; without
    ``prev_probs`` (the first query) ``U = p_t``."""
    extrapolated = probs if prev_probs is None else probs + beta * (probs - prev_probs)
    top2 = extrapolated.topk(2, dim=-1).values
    return top2[:, 0] - top2[:, 1]


def class_weights(pseudo_labels: Tensor, margin: Tensor, num_classes: int, top_k: int) -> Tensor:
    """``w_{y^_i}`` per sample: the share of class ``y^_i`` among the pseudo-labels of the
    ``top_k`` samples of highest margin, divided by the largest class count."""
    top = margin.argsort(descending=True)[:top_k]
    counts = torch.bincount(pseudo_labels[top], minlength=num_classes).float()
    return (counts / counts.max())[pseudo_labels]


def contrastive_scores(
    probs: Tensor,
    prev_probs: Tensor | None,
    beta: float = 0.03,
    top_k: int = 100,
    lambda_topk: float = 0.1,
) -> Tensor:
    """CAS score of each unlabelled sample [N] (lower: queried first). ``probs``: the current
    model's softmax [N, C]; ``prev_probs``: the previous round's model's on the same samples
    (None in the first round). With ``lambda_topk = 0`` the score is the (extrapolated) margin
    itself, unnormalised, as in the code."""
    margin = margins(probs, prev_probs, beta)
    if lambda_topk <= 0:
        return margin
    weights = class_weights(probs.argmax(dim=-1), margin, probs.shape[-1], top_k)
    return margin / margin.max() + lambda_topk * weights


def lowest(scores: Tensor, n: int) -> Tensor:
    """Indices of the ``n`` lowest scores (ties: the lower index first)."""
    return scores.argsort(stable=True)[:n]


def update_memory(memory: Tensor, embeddings: Tensor, momentum: float = 0.9) -> Tensor:
    """``(1 - mu) m + mu e`` row by row (``momentum`` = mu weights the new embedding)."""
    return (1 - momentum) * memory + momentum * embeddings


def vpa_loss(embeddings: Tensor, memory: Tensor) -> Tensor:
    """``mean_x H(softmax_a cos(e_x, m_a))`` of unlabelled embeddings [B, D] against the
    anchor memory [A, D] (constant: gradients reach the embeddings only)."""
    cosine = F.normalize(embeddings, dim=-1) @ F.normalize(memory.detach(), dim=-1).T
    return entropy(cosine.softmax(dim=-1)).mean()


def im_loss(logits: Tensor) -> Tensor:
    """SHOT's information maximisation: mean per-sample entropy minus the entropy of the mean
    prediction (low: confident predictions spread evenly over the classes)."""
    probs = logits.softmax(dim=-1)
    return entropy(probs).mean() - entropy(probs.mean(dim=0, keepdim=True)).squeeze(0)
