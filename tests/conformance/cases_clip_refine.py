"""CLIP-Refine: HyCD (diagonal and id-defined positives, frozen teacher) and RaFA (both forms,
the random reference passed as an input) against references written scalar by scalar."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from modules.losses.clip_refine import hycd_loss, rafa_loss
from tests.conformance.kit import LossCase, randn

N, D = 8, 4
IDS = torch.tensor([2, 0, 1, 0, 2, 3, 1, 0])  # ids 0, 1 and 2 have positives on both ranks


def slow_hycd(si, st, ti, tt, alpha: float, t_kd: float, ids: Tensor | None) -> Tensor:
    """T_kd^2 * mean_i KL(q_i || p_i), both directions, one scalar at a time; the teacher's
    logits are plain floats (no gradient)."""
    n = si.shape[0]
    ids = list(range(n)) if ids is None else ids.tolist()

    def dot(a, b):
        return sum(a[k] * b[k] for k in range(a.shape[0]))

    def direction(s_rows, s_cols, t_rows, t_cols):
        total = 0.0
        for i in range(n):
            student = [dot(s_rows[i], s_cols[j]) / t_kd for j in range(n)]
            teacher = [float(dot(t_rows[i], t_cols[j])) / t_kd for j in range(n)]
            s_lse = torch.log(sum(torch.exp(v) for v in student))
            t_norm = sum(math.exp(v) for v in teacher)
            positives = [j for j in range(n) if ids[j] == ids[i]]
            for j in range(n):
                hard = 1.0 / len(positives) if j in positives else 0.0
                q = alpha * hard + (1.0 - alpha) * math.exp(teacher[j]) / t_norm
                if q > 0:
                    total = total + q * (math.log(q) - (student[j] - s_lse))
        return total * t_kd**2 / n

    return 0.5 * (direction(si, st, ti, tt) + direction(st, si, tt, ti))


def towers(generator: torch.Generator) -> dict[str, Tensor]:
    """Un-normalised student and teacher features (the official code's inputs)."""
    return {
        "student_image": 2.0 * randn(generator, N, D),
        "student_text": 2.0 * randn(generator, N, D),
        "teacher_image": 2.0 * randn(generator, N, D),
        "teacher_text": 2.0 * randn(generator, N, D),
        "ids": IDS.clone(),
    }


def hycd_case(name: str, alpha: float, t_kd: float, with_ids: bool) -> LossCase:
    def loss(student_image, student_text, teacher_image, teacher_text, ids):
        ids = ids if with_ids else None
        return hycd_loss(student_image, student_text, teacher_image, teacher_text, alpha, t_kd, ids)

    def reference(student_image, student_text, teacher_image, teacher_text, ids):
        ids = ids if with_ids else None
        return slow_hycd(student_image, student_text, teacher_image, teacher_text, alpha, t_kd, ids)

    return LossCase(
        name=f"clip_refine/hycd_{name}",
        inputs=towers,
        per_sample=("student_image", "student_text", "teacher_image", "teacher_text", "ids"),
        loss=loss,
        reference=reference,
        differentiable=("student_image", "student_text"),
        no_grad=("teacher_image", "teacher_text"),
    )


def slow_rafa(image: Tensor, text: Tensor, reference: Tensor, form: str) -> Tensor:
    """``code``: the two element-wise MSEs; ``paper``: ``(1/B) sum_i 1/2 (|z_I,i - z_ref,i|^2 +
    |z_T,i - z_ref,i|^2)``; element by element."""
    b, d = image.shape
    sq_image = sum((image[i, k] - reference[i, k]) ** 2 for i in range(b) for k in range(d))
    sq_text = sum((text[i, k] - reference[i, k]) ** 2 for i in range(b) for k in range(d))
    if form == "code":
        return sq_image / (b * d) + sq_text / (b * d)
    return 0.5 * (sq_image + sq_text) / b


def rafa_inputs(generator: torch.Generator) -> dict[str, Tensor]:
    """Features and the step's N(0, I) reference draw (``rafa_reference``), one row per pair."""
    return {
        "image": randn(generator, N, D),
        "text": randn(generator, N, D),
        "reference": randn(generator, N, D),
    }


def rafa_case(form: str) -> LossCase:
    return LossCase(
        name=f"clip_refine/rafa_{form}",
        inputs=rafa_inputs,
        per_sample=("image", "text", "reference"),
        loss=lambda image, text, reference: rafa_loss(image, text, reference, form=form),
        reference=lambda image, text, reference: slow_rafa(image, text, reference, form),
        differentiable=("image", "text"),
    )


CASES = [
    hycd_case("diagonal", alpha=0.5, t_kd=1.0, with_ids=False),
    hycd_case("multi_positive", alpha=0.3, t_kd=2.0, with_ids=True),
    rafa_case("code"),
    rafa_case("paper"),
]
