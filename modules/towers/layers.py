"""Building blocks shared by the towers: projection heads and the pre-norm transformer."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class TransformerConfig:
    """Width and depth of a pre-norm transformer tower (ViT, text)."""

    width: int = 128
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.0
    projection: str = "linear"


def transformer_encoder(cfg: TransformerConfig) -> nn.TransformerEncoder:
    """``cfg.depth`` pre-norm encoder layers (GELU MLP), batch first."""
    if cfg.width % cfg.heads:
        raise ValueError(f"width {cfg.width} is not divisible by heads {cfg.heads}")
    layer = nn.TransformerEncoderLayer(
        cfg.width,
        cfg.heads,
        int(cfg.width * cfg.mlp_ratio),
        cfg.dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
    return nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)


def projection_head(in_dim: int, out_dim: int, kind: str = "linear") -> nn.Module:
    """``linear`` (CLIP) or ``mlp`` (Linear-GELU-Linear, as in SimCLR-style heads)."""
    if kind == "linear":
        return nn.Linear(in_dim, out_dim, bias=False)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim))
    raise ValueError(f"unknown projection head {kind!r}; known: linear, mlp")
