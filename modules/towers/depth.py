"""Depth tower: the image CNN over a one-channel depth map repeated to three channels.

LanguageBind (and ImageBind) read a depth map as an image: the official depth transform
repeats the normalised map to 3 channels (``DepthNorm``, ``repeat(3, 1, 1)``) so the depth
tower has the image tower's shape and can start from its weights. Same here: ``depth``
[B, 1, S, S] (or already [B, 3, S, S]) goes through a :class:`~modules.towers.image.CNNTower`
with three input channels.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from modules.registry import TOWERS
from modules.towers import TowerContext
from modules.towers.image import CNNTower
from modules.towers.output import TowerOutput


@dataclass
class DepthCNNConfig:
    name: str = "depth_cnn"
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    projection: str = "linear"
    key: str = "depth"


@TOWERS.register("depth_cnn", DepthCNNConfig)
class DepthCNNTower(CNNTower):
    """``depth`` [B, 1, S, S] -> repeated to 3 channels -> residual CNN -> pool -> projection."""

    modality = "depth"

    def __init__(self, cfg: DepthCNNConfig, embed_dim: int, context: TowerContext) -> None:
        super().__init__(cfg, embed_dim, replace(context, in_channels=3))

    def forward(self, batch: dict[str, torch.Tensor]) -> TowerOutput:
        depth = batch[self.key]
        if depth.ndim != 4 or depth.shape[1] not in (1, 3):
            raise ValueError(f"{self.key}: expected [B, 1, H, W], got {tuple(depth.shape)}")
        return self.encode(depth.expand(-1, 3, -1, -1))
