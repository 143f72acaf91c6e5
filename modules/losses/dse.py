"""DSE, Distilled Sentence Embedding (Barkan, Razin, Malkiel, Katz, Caciularu and Koenigstein,
"Scalable Attentive Sentence-Pair Modeling via Distilled Sentence Embedding", AAAI 2020;
methods/part2.md section 36). Plain functions, checked against the official code
``microsoft/Distilled-Sentence-Embedding``:

- the pair feature of two sentence embeddings (``models/feature_extractors.py``,
  ``ConcatCompareCombinedFeaturesExtractor``), in this order:

      h(u, v) = [u; v; u * v; |u - v|]                               (size 4d)

- the distillation term (``train/trainers/dse_trainer.py``, ``__calc_distillation_loss``): the
  squared error between the student's pair logits ``z_s`` and the teacher's ``z_t``, **summed
  over the C logits** and averaged over the batch,

      L_dist = (1/B) sum_b ||z_s[b] - z_t[b]||^2

- the combination (``batch_update``): ``L = (1 - alpha) L_task + alpha L_dist``, alpha the
  code's ``distillation_coeff`` (default 0.5; the paper text speaks of score reconstruction,
  i.e. alpha = 1: the parameter covers both). ``L_task``: BCE with logits for a binary task
  (one logit), CE for several classes;
- a binary teacher (BERT's sequence classifier, two logits) is reduced to one logit as the code
  does before training (``dse_configurable_trainer.py``): ``z_t = z[:, 1] - z[:, 0]``.

Every term is a mean over this rank's pairs, so under DDP the ranks' average is the one-process
value (nothing is gathered).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def pair_features(u: Tensor, v: Tensor) -> Tensor:
    """``[u; v; u * v; |u - v|]`` [B, 4d] of sentence embeddings ``u``, ``v`` [B, d]."""
    return torch.cat([u, v, u * v, (u - v).abs()], dim=-1)


def binary_teacher_logit(logits: Tensor) -> Tensor:
    """A two-class teacher's logits [B, 2] as the one logit [B, 1] a binary student learns:
    ``z[:, 1] - z[:, 0]`` (the same probability: softmax over two = sigmoid of the gap)."""
    if logits.ndim != 2 or logits.shape[1] != 2:
        raise ValueError(f"expected two-class logits [B, 2], got {tuple(logits.shape)}")
    return (logits[:, 1] - logits[:, 0]).unsqueeze(1)


def distillation_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """``(1/B) sum_b ||z_s[b] - z_t[b]||^2``: summed over the logits, averaged over pairs;
    no gradient reaches the teacher's logits."""
    if student.shape != teacher.shape:
        raise ValueError(
            f"student logits {tuple(student.shape)} and teacher logits "
            f"{tuple(teacher.shape)} differ"
        )
    return (student - teacher.detach()).pow(2).sum(dim=1).mean()


def task_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """The supervised term: BCE with logits for one logit [B, 1] and 0/1 labels, CE for
    several logits [B, C] and class ids."""
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits.squeeze(1), labels.to(logits.dtype))
    return F.cross_entropy(logits, labels.long())


def dse_terms(
    student: Tensor, labels: Tensor, teacher: Tensor | None, alpha: float
) -> dict[str, Tensor]:
    """The two terms of ``L = (1 - alpha) L_task + alpha L_dist``, each already weighted (their
    sum is the paper's loss): ``task`` and ``distillation``. With ``alpha = 0`` the teacher is
    not needed (None) and ``distillation`` is 0 (the bi-encoder trained on the labels only)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    terms = {"task": (1.0 - alpha) * task_loss(student, labels)}
    if alpha == 0.0:
        terms["distillation"] = student.new_zeros(())
    else:
        if teacher is None:
            raise ValueError("alpha > 0 needs the teacher's logits")
        terms["distillation"] = alpha * distillation_loss(student, teacher)
    return terms
