"""CLIP-Refine losses (Yamaguchi et al., CVPR 2025, arXiv 2504.12717): RaFA and HyCD.

Checked against the official code (yshinya6/clip-refine, `updater/contrastive.py`:
`RandRegUpdater`, `distill`; `model/mod_clip.py`; `config/01_post-pre-training/clip-refine.yaml`):

* The code applies both losses to the **un-normalised** projection outputs: `CLIP.forward`
  returns raw `encode_image` / `encode_text` (normalisation happens only in the zero-shot
  path), and the teacher is a frozen copy fed the same way. Secondary summaries of the paper
  describe l2-normalised features (not confirmed from the PDF). These functions normalise
  nothing: the method chooses what it passes in (the code's choice is raw features).
* RaFA: one `N(0, I_d)` draw per pair shared by image and text (`share_random_feat=True`).
* HyCD: logits are raw dot products, no logit scale; targets `alpha * I + (1 - alpha) *
  softmax(teacher / T_kd)`; `KL(q || softmax(student / T_kd)) * T_kd^2` averaged over rows
  (`batchmean`), symmetric. Config: alpha = 0.5, T_kd = 1, lambda_rand = lambda_kd = 1 and
  no separate CLIP loss (lambda_cont = 0).
"""

from typing import Literal

import torch
from torch import Tensor

from modules.distributed import gather_no_grad, gather_with_grad
from modules.losses.contrastive import multi_positive_targets, row_and_column_ids


def rafa_reference(
    batch_size: int,
    dim: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Reference vectors z_ref ~ N(0, I_d), one row per (image, text) pair: [batch_size, dim].

    Draw once per step and pass the same tensor for both modalities. A `generator` must live
    on `device`. Under DDP each rank draws for its own pairs, so seed ranks differently if
    references should be independent across ranks.
    """
    return torch.randn(batch_size, dim, generator=generator, device=device, dtype=dtype)


def rafa_loss(
    image: Tensor,
    text: Tensor,
    reference: Tensor,
    form: Literal["code", "paper"] = "code",
) -> Tensor:
    """Random Feature Alignment: pull both features of pair i to the same z_ref,i.

    `form="code"` (default, official code): `MSE(z_I, z_ref) + MSE(z_T, z_ref)`, each a mean
    over B*d elements. `form="paper"`: `(1/B) sum_i 1/2 (|z_I,i - z_ref,i|^2 + |z_T,i -
    z_ref,i|^2)`. code = (2/d) * paper; the code's lambda_rand = 1 is tuned for the code form.
    The loss is per pair, so a per-rank mean is already exact under DDP averaging.
    """
    assert image.shape == text.shape == reference.shape, (
        f"image {tuple(image.shape)}, text {tuple(text.shape)}, "
        f"reference {tuple(reference.shape)} must match"
    )
    sq_image = (image - reference).pow(2)
    sq_text = (text - reference).pow(2)
    if form == "code":
        return sq_image.mean() + sq_text.mean()
    if form == "paper":
        return 0.5 * (sq_image.sum(dim=1) + sq_text.sum(dim=1)).mean()
    raise ValueError(f"form must be 'code' or 'paper', got {form!r}")


def hybrid_targets(
    teacher_logits: Tensor,
    alpha: float,
    t_kd: float,
    ids_row: Tensor | None = None,
    ids_col: Tensor | None = None,
) -> Tensor:
    """HyCD targets `q = alpha * P + (1 - alpha) * softmax(teacher_logits / t_kd)`, rows sum to 1.

    P is the identity [R, C] when no ids are given (row i's positive is column i: pass ids
    for local rows against global columns), else each row uniform over the columns with the
    same id (several captions of one image). The teacher is detached.
    """
    assert (ids_row is None) == (ids_col is None), "give both ids_row and ids_col, or neither"
    soft = (teacher_logits.detach() / t_kd).softmax(dim=1)
    if ids_row is None:
        hard = torch.eye(*soft.shape, device=soft.device, dtype=soft.dtype)
    else:
        hard = multi_positive_targets(ids_row, ids_col, dtype=soft.dtype)
    return alpha * hard + (1.0 - alpha) * soft


def _distill(student_logits: Tensor, targets: Tensor, t_kd: float) -> Tensor:
    """`T_kd^2 * (1/R) sum_i KL(q_i || softmax(student_i / T_kd))` (0 log 0 = 0)."""
    log_p = (student_logits / t_kd).log_softmax(dim=1)
    kl = (torch.xlogy(targets, targets) - targets * log_p).sum(dim=1)
    return kl.mean() * t_kd**2


def hycd_loss(
    student_image: Tensor,
    student_text: Tensor,
    teacher_image: Tensor,
    teacher_text: Tensor,
    alpha: float = 0.5,
    t_kd: float = 1.0,
    ids: Tensor | None = None,
) -> Tensor:
    """Hybrid Contrastive-Distillation `1/2 (L_{I->T} + L_{T->I})` on raw dot-product logits.

    `L_{I->T} = T_kd^2 (1/B) sum_i KL(q_i || softmax(l^S_i / T_kd))`, `l_ij = <z^I_i, z^T_j>`,
    `q_i` from `hybrid_targets` on the teacher's logits; `L_{T->I}` uses text rows. Because
    `KL(q||p) = alpha CE(P) + (1 - alpha) CE(teacher) - H(q)`, the alpha part is the
    contrastive term. `ids` [B]: positives by id (None = diagonal). Under DDP: local rows x
    global columns; student columns via `gather_with_grad`, teacher via `gather_no_grad`.
    """
    batch = student_image.shape[0]
    assert student_image.shape == student_text.shape, "student image/text shapes differ"
    assert teacher_image.shape == teacher_text.shape, "teacher image/text shapes differ"
    assert teacher_image.shape[0] == batch, "teacher and student batch sizes differ"
    rows, cols = row_and_column_ids(ids, batch, student_image.device)
    teacher_image, teacher_text = teacher_image.detach(), teacher_text.detach()

    def direction(s_rows: Tensor, s_cols: Tensor, t_rows: Tensor, t_cols: Tensor) -> Tensor:
        targets = hybrid_targets(t_rows @ t_cols.T, alpha, t_kd, rows, cols)
        return _distill(s_rows @ s_cols.T, targets, t_kd)

    loss_i2t = direction(
        student_image, gather_with_grad(student_text), teacher_image, gather_no_grad(teacher_text)
    )
    loss_t2i = direction(
        student_text, gather_with_grad(student_image), teacher_text, gather_no_grad(teacher_image)
    )
    return 0.5 * (loss_i2t + loss_t2i)
