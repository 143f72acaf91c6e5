"""Loss functions: pure functions on tensors, one file per family."""

from modules.losses.clip_refine import hybrid_targets, hycd_loss, rafa_loss, rafa_reference
from modules.losses.contrastive import (
    clip_loss,
    multi_positive_targets,
    positive_mask,
    row_and_column_ids,
    soft_target_cross_entropy,
)

__all__ = [
    "clip_loss",
    "hybrid_targets",
    "hycd_loss",
    "multi_positive_targets",
    "positive_mask",
    "rafa_loss",
    "rafa_reference",
    "row_and_column_ids",
    "soft_target_cross_entropy",
]
