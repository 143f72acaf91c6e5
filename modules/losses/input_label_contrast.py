"""Input-label contrast (Rethmeier & Augenstein, "A Primer on Contrastive Pretraining in Language
Processing", the survey's input-label pattern; methods/part1.md section 28): an input is
contrasted against the embeddings of every class's label text, the class's own being the
positive,

    L = -(1/B) sum_i log [ exp(s(x_i, l_{y_i}) / tau) / sum_c exp(s(x_i, l_c) / tau) ],

with ``s`` the dot product of the (caller-normalised: cosine) input and label embeddings. The
survey gives the form, no equation number and no value of tau. Every rank holds all C label
embeddings, so nothing is gathered: the mean over local rows, averaged by DDP, is the mean over
the global batch (equal local batches).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def label_logits(inputs: Tensor, labels: Tensor, logit_scale: Tensor | float) -> Tensor:
    """``scale * <x_i, l_c>`` [B, C] for inputs [B, D] and label embeddings [C, D]."""
    if inputs.shape[-1] != labels.shape[-1]:
        raise ValueError(f"inputs {tuple(inputs.shape)} and labels {tuple(labels.shape)} differ")
    return logit_scale * inputs @ labels.T


def input_label_contrast_loss(
    inputs: Tensor, labels: Tensor, targets: Tensor, logit_scale: Tensor | float
) -> Tensor:
    """The input-label InfoNCE above: cross-entropy of :func:`label_logits` with the class ids
    ``targets`` [B] (``-1``: no label, left out of the mean)."""
    return F.cross_entropy(label_logits(inputs, labels, logit_scale), targets, ignore_index=-1)
