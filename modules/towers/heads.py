"""Projection heads: encoder width -> shared embedding width."""

from __future__ import annotations

from torch import nn


def projection_head(in_dim: int, out_dim: int, kind: str = "linear") -> nn.Module:
    """``linear`` (CLIP) or ``mlp`` (Linear-GELU-Linear, as in SimCLR-style heads)."""
    if kind == "linear":
        return nn.Linear(in_dim, out_dim, bias=False)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim))
    raise ValueError(f"unknown projection head {kind!r}; known: linear, mlp")
