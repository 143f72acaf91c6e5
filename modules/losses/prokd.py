"""ProKD's losses (Ge et al., "ProKD: An Unsupervised Prototypical Knowledge Distillation Network
for Zero-Resource Cross-Lingual Named Entity Recognition", AAAI 2023; methods/part1.md Sec. 6).

Notation: token features ``h`` [N, D] (L2-normalised here), ``K`` tag classes, class
prototypes ``c_k`` = the mean feature of the tokens of class ``k``.

- :func:`prototype_alignment` (the teacher's contrastive prototype alignment, L_PA): source
  prototypes ``c^S_k`` (gold tags) against target prototypes ``c^T_k`` (pseudo-labels), an
  InfoNCE over classes with the same class as the positive, both directions averaged::

      L_PA = 1/2 [ CE(cos(c^S, c^T) / tau, diag) + CE(cos(c^T, c^S) / tau, diag) ]

  over the classes present on both sides (fewer than two: 0).
- :func:`prototype_weights` (prototypical self-training, PST): each target token's weights
  ``w_ik = softmax_k(-||h_i - eta_k|| / tau_d)`` from its distances to the target prototypes
  ``eta_k``; :func:`rectified_labels`: ``argmax_k w_ik p_ik`` of the teacher's probabilities
  ``p`` (the student is retrained on these hard labels with cross-entropy).
- :func:`distillation_mse` (the KD term of the teacher-student baseline, Wu et al., ACL 2020,
  whose official code ``microsoft/vert-papers`` SingleMulti-TS uses ``MSELoss`` between the
  teacher's and the student's softmax probabilities): mean squared error per token.

The paper's full text was not reachable (no official code exists); the equations above follow
the spec's reconstruction (marked ⚠ there), and the choices are listed in modules/prokd.py.

DDP: :func:`class_means` sums each class over every rank's tokens (gradient kept), so the
prototypes are the global batch's whatever the number of processes; per-token terms are
averaged with :func:`~modules.losses.alpro.masked_token_mean` (global count).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.distributed import gather_no_grad, gather_with_grad, world_size


def class_means(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class mean of ``features`` [N, D] over the tokens labelled ``k`` (``labels`` [N];
    negative: no class) of every rank: (means [K, D], counts [K]); a class with no token has
    mean 0 and count 0. The gradient reaches each rank's own features."""
    selected = labels >= 0
    one_hot = F.one_hot(labels.clamp_min(0), num_classes).to(features.dtype)
    one_hot = one_hot * selected.unsqueeze(1).to(features.dtype)
    sums, counts = one_hot.T @ features, one_hot.sum(0)
    if world_size() > 1:
        sums = gather_with_grad(sums.unsqueeze(0)).sum(0)
        counts = gather_no_grad(counts.unsqueeze(0)).sum(0)
    return sums / counts.clamp_min(1.0).unsqueeze(1), counts


def prototype_alignment(
    source: Tensor, target: Tensor, valid: Tensor, temperature: float
) -> Tensor:
    """L_PA: InfoNCE between source and target prototypes [K, D] of the ``valid`` [K] classes
    (same class positive, the other classes negatives), both directions averaged."""
    if int(valid.sum()) < 2:
        return (source.sum() + target.sum()) * 0.0
    s = F.normalize(source[valid], dim=-1)
    t = F.normalize(target[valid], dim=-1)
    logits = s @ t.T / temperature
    labels = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def prototype_weights(
    features: Tensor, prototypes: Tensor, valid: Tensor, temperature: float
) -> Tensor:
    """``softmax_k(-||h_i - eta_k|| / tau_d)`` [N, K] over the ``valid`` prototypes (the others
    weigh 0); ``features`` [N, D], ``prototypes`` [K, D]."""
    distances = torch.cdist(features, prototypes)
    scores = (-distances / temperature).masked_fill(~valid.unsqueeze(0), -torch.inf)
    return scores.softmax(dim=-1)


def rectified_labels(teacher_probs: Tensor, weights: Tensor) -> Tensor:
    """PST's hard pseudo-labels [N]: ``argmax_k weights_ik * p_ik`` (``teacher_probs`` [N, K])."""
    return (weights * teacher_probs).argmax(dim=-1)


def distillation_mse(student_logits: Tensor, teacher_probs: Tensor) -> Tensor:
    """Per-token KD loss [N]: mean over classes of (softmax(student) - p_teacher)^2."""
    return (student_logits.softmax(dim=-1) - teacher_probs).pow(2).mean(dim=-1)
