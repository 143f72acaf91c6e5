"""Audio tower: the residual CNN of the image towers over a log-mel spectrogram.

The spectrogram [n_mels, frames] is a one-channel picture whose axes are frequency and time
(as in VGGish and PANNs); each CNN stage halves both. Tokens are the positions of the last
feature map, so token-level methods can use time-frequency patches.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from modules.registry import TOWERS
from modules.towers import TowerContext
from modules.towers.image import CNNTower
from modules.towers.output import TowerOutput


@dataclass
class AudioCNNConfig:
    """``normalize``: standardise each spectrogram (zero mean, unit variance) before the CNN,
    so loudness differences between recordings do not dominate the embedding."""

    name: str = "audio_cnn"
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    projection: str = "linear"
    normalize: bool = True
    key: str = "audio"


@TOWERS.register("audio_cnn", AudioCNNConfig)
class AudioCNNTower(CNNTower):
    """``audio`` [B, n_mels, frames] log-mel -> residual CNN -> mean pool -> projection."""

    modality = "audio"

    def __init__(self, cfg: AudioCNNConfig, embed_dim: int, context: TowerContext) -> None:
        super().__init__(cfg, embed_dim, replace(context, in_channels=1))
        self.normalize = cfg.normalize

    def forward(self, batch: dict[str, torch.Tensor]) -> TowerOutput:
        spec = batch[self.key]
        if spec.ndim != 3:
            raise ValueError(f"{self.key}: expected [B, n_mels, frames], got {tuple(spec.shape)}")
        if self.normalize:
            mean = spec.mean(dim=(1, 2), keepdim=True)
            spec = (spec - mean) / spec.std(dim=(1, 2), keepdim=True).clamp_min(1e-5)
        return self.encode(spec.unsqueeze(1))
