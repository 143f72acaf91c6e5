"""Image towers trained from scratch: a small residual CNN and a tiny ViT.

Both return the pooled embedding and the projected patch tokens (the CNN's last feature map
positions, the ViT's patch tokens), so token/patch-level methods can use either.
GroupNorm instead of BatchNorm: batch statistics would leak information across the samples of a
contrastive batch and differ between DDP ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from modules.registry import TOWERS
from modules.towers import TowerContext
from modules.towers.layers import TransformerConfig, projection_head, transformer_encoder
from modules.towers.output import TowerOutput


@dataclass
class CNNConfig:
    name: str = "cnn"
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    projection: str = "linear"
    key: str = "image"


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class _Stage(nn.Module):
    """Stride-2 conv, then a residual 3x3 conv: halves the resolution."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.down = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
            _group_norm(c_out),
            nn.GELU(),
        )
        self.res = nn.Sequential(
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), _group_norm(c_out), nn.GELU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return x + self.res(x)


@TOWERS.register("cnn", CNNConfig)
class CNNTower(nn.Module):
    """Residual CNN; each stage halves the resolution; mean-pooled then projected."""

    modality = "image"

    def __init__(self, cfg: CNNConfig, embed_dim: int, context: TowerContext) -> None:
        super().__init__()
        if not cfg.channels:
            raise ValueError("channels: needs at least one stage")
        self.key = cfg.key
        widths = [context.in_channels, *cfg.channels]
        self.stages = nn.Sequential(
            *(_Stage(a, b) for a, b in zip(widths, widths[1:], strict=False))
        )
        self.head = projection_head(cfg.channels[-1], embed_dim, cfg.projection)

    def forward(self, batch: dict[str, torch.Tensor]) -> TowerOutput:
        return self.encode(batch[self.key])

    def encode(self, x: torch.Tensor) -> TowerOutput:
        """``x`` [B, C, H, W] -> pooled [B, D] and one token per feature-map position."""
        features = self.stages(x)  # [B, C, h, w]
        tokens = features.flatten(2).transpose(1, 2)  # [B, h*w, C]
        return TowerOutput(self.head(tokens.mean(dim=1)), self.head(tokens), None)


@dataclass
class ViTConfig(TransformerConfig):
    name: str = "vit"
    patch_size: int = 8
    depth: int = 4
    key: str = "image"


@TOWERS.register("vit", ViTConfig)
class ViTTower(nn.Module):
    """Tiny ViT (Dosovitskiy et al. 2021): patch embedding, [CLS], pre-norm transformer."""

    modality = "image"

    def __init__(self, cfg: ViTConfig, embed_dim: int, context: TowerContext) -> None:
        super().__init__()
        if context.image_size % cfg.patch_size:
            raise ValueError(
                f"patch_size: {cfg.patch_size} does not divide the image size {context.image_size}"
            )
        self.key = cfg.key
        num_patches = (context.image_size // cfg.patch_size) ** 2
        self.patchify = nn.Conv2d(context.in_channels, cfg.width, cfg.patch_size, cfg.patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos = nn.Parameter(torch.randn(1, num_patches + 1, cfg.width) * 0.02)
        self.encoder = transformer_encoder(cfg)
        self.norm = nn.LayerNorm(cfg.width)
        self.head = projection_head(cfg.width, embed_dim, cfg.projection)

    def forward(self, batch: dict[str, torch.Tensor]) -> TowerOutput:
        patches = self.patchify(batch[self.key]).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(len(patches), -1, -1), patches], dim=1) + self.pos
        x = self.norm(self.encoder(x))
        return TowerOutput(self.head(x[:, 0]), self.head(x[:, 1:]), None)
