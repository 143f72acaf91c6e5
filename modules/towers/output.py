"""What every tower returns."""

from __future__ import annotations

from typing import NamedTuple

import torch


class TowerOutput(NamedTuple):
    """``pooled[B, D]`` projected (not normalised) embedding; ``tokens[B, T, D]`` projected
    token/patch embeddings (or None); ``mask[B, T]`` True where a token is real (or None)."""

    pooled: torch.Tensor
    tokens: torch.Tensor | None = None
    mask: torch.Tensor | None = None
