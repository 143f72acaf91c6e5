"""COCONUT's two contrastive terms (Cappellazzo et al., "Continual Contrastive Spoken Language
Understanding", Findings of ACL 2024), as methods/part2.md section 63 gives them ([memory];
no official code was found, see modules/coconut.py for what is and is not confirmed).

Notation: ``z`` the student's L2-normalised audio embeddings, ``t`` the frozen teacher's (the
model after the previous task) of the same samples, ``e`` the student's text embeddings,
``y`` the intents, ``R`` the rehearsal samples of the batch, ``N`` the new-task samples.

- NSPT ("negative-student, positive-teacher"), a supervised contrastive loss (SupCon, Khosla
  et al. 2020, the "out" form) on the rehearsal samples only: anchors and negatives from the
  student, positives from the teacher,

      L_NSPT = (1/|R|) sum_{i in R} -(1/|P(i)|) sum_{p in P(i)}
               log [ exp(z_i.t_p / tau) / (sum_{a in P(i)} exp(z_i.t_a / tau)
                                           + sum_{n in R, y_n != y_i} exp(z_i.z_n / tau)) ]

  with ``P(i) = {p in R : y_p = y_i}`` (the anchor's own teacher embedding included). The
  teacher gets no gradient; a negative never shares the anchor's intent.
- MM, a multimodal supervised contrastive loss between audio and text on the new-task
  samples: symmetric InfoNCE whose positives are the same-intent samples,

      L_MM = 1/2 [ (1/|N|) sum_{i in N} CE_soft(s * z_i.e_N, q_i)
                 + (1/|N|) sum_{i in N} CE_soft(s * e_i.z_N, q_i) ],

  ``q_i`` uniform over ``{j in N : y_j = y_i}``, ``s`` the logit scale.

DDP (modules/losses/contrastive.py's convention): local rows against gathered columns; since
the number of rehearsal (new) rows differs between ranks, each rank divides its sum over its
rows by the global row count and multiplies by the world size, so DDP's gradient average is
the single-process mean over all rows. A batch without rehearsal (new) rows gives 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from modules.distributed import gather_no_grad, gather_with_grad, world_size


def _gather_flags(flags: Tensor) -> Tensor:
    """Every rank's boolean ``flags`` (gathered as integers: gloo gathers no bool)."""
    return gather_no_grad(flags.long()).bool()


def _global_mean(per_row: Tensor, rows: Tensor) -> Tensor:
    """Sum of ``per_row`` over the selected local ``rows`` (bool) divided by the global number
    of selected rows, times the world size (so that DDP's average is the global mean)."""
    count = _gather_flags(rows).sum().to(per_row.dtype)
    total = torch.where(rows, per_row, 0.0).sum()
    return total * world_size() / count.clamp_min(1.0)


def nspt_loss(
    student: Tensor, teacher: Tensor, labels: Tensor, rehearsal: Tensor, temperature: float
) -> Tensor:
    """L_NSPT on this rank's rows: ``student``, ``teacher`` [n, D] L2-normalised (the teacher
    detached here), ``labels`` [n] intents, ``rehearsal`` [n] bool (memory samples)."""
    teacher = teacher.detach()
    all_student = gather_with_grad(student)
    all_teacher = gather_no_grad(teacher)
    all_labels, all_rehearsal = gather_no_grad(labels), _gather_flags(rehearsal)
    same = labels[:, None] == all_labels[None, :]
    positives = same & all_rehearsal[None, :]
    negatives = ~same & all_rehearsal[None, :]
    to_teacher = student @ all_teacher.T / temperature
    to_student = student @ all_student.T / temperature
    terms = torch.where(positives, to_teacher, torch.where(negatives, to_student, -math.inf))
    # rows that are not anchors may have no term at all: give them a finite dummy
    anchors = rehearsal & positives.any(dim=1)
    log_denominator = torch.where(anchors[:, None], terms, 0.0).logsumexp(dim=1, keepdim=True)
    per_positive = torch.where(positives, log_denominator - to_teacher, 0.0)
    per_row = per_positive.sum(dim=1) / positives.sum(dim=1).clamp_min(1)
    return _global_mean(per_row, anchors)


def multimodal_supcon_loss(
    audio: Tensor, text: Tensor, labels: Tensor, new: Tensor, logit_scale: Tensor | float
) -> Tensor:
    """L_MM on this rank's rows: ``audio``, ``text`` [n, D] L2-normalised, ``labels`` [n],
    ``new`` [n] bool (new-task samples), ``logit_scale`` = 1 / tau."""
    all_labels, all_new = gather_no_grad(labels), _gather_flags(new)
    targets = ((labels[:, None] == all_labels[None, :]) & all_new[None, :]).to(audio.dtype)
    targets = targets / targets.sum(dim=1, keepdim=True).clamp_min(1.0)
    loss = 0.0
    for rows, columns in ((audio, gather_with_grad(text)), (text, gather_with_grad(audio))):
        logits = logit_scale * rows @ columns.T
        logits = torch.where(all_new[None, :], logits, -math.inf)
        log_prob = torch.where(new[:, None], logits, 0.0).log_softmax(dim=1)
        per_row = -(targets * torch.where(targets > 0, log_prob, 0.0)).sum(dim=1)
        loss = loss + 0.5 * _global_mean(per_row, new)
    return loss
