"""Lightning callbacks and torchmetrics metrics for evaluating paired embeddings."""

import modules.env  # noqa: F401

from callbacks.evaluation import EmbeddingMetrics
from callbacks.metrics import (
    AlignmentUniformity,
    ModalityGap,
    RetrievalMetrics,
    ZeroShotAccuracy,
)
from callbacks.plots import EmbeddingPlots

__all__ = [
    "AlignmentUniformity",
    "EmbeddingMetrics",
    "EmbeddingPlots",
    "ModalityGap",
    "RetrievalMetrics",
    "ZeroShotAccuracy",
]
