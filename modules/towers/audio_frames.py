"""Audio tower with one token per video frame: a strided 1-D convolution front-end over the
log-mel frames, then a small transformer over time.

CoGenAV (and AV-HuBERT before it) reads 100 Hz log-mel frames with two Conv1d layers (kernel
3, GELU), each of stride 2, so that the audio features run at the 25 fps of the lip video and
frame ``t`` of one stream faces frame ``t`` of the other (released ``models/cogenav.py``,
``AudioFronted``). Here the ratio of audio frames to video frames, ``r = audio_frames /
num_frames``, comes from the data (5 for the built-in talking clips: 100 Hz mel, 20 fps): the
first convolution keeps the rate (kernel 3, stride 1) and the second has kernel and stride
``r``, so its output has exactly one step per video frame, covering that frame's audio.
Learned time embeddings and a pre-norm transformer follow (as the video tower's), so
``tokens`` [B, T, D] line up with the video tower's per-frame tokens; ``pooled`` is their mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from modules.registry import TOWERS
from modules.towers import TowerContext
from modules.towers.layers import TransformerConfig, projection_head, transformer_encoder
from modules.towers.output import TowerOutput


@dataclass
class AudioFramesConfig(TransformerConfig):
    """``width``/``depth``/``heads``: the front-end's channels and the temporal transformer;
    ``normalize``: standardise each spectrogram first (as ``audio_cnn``)."""

    name: str = "audio_frames"
    normalize: bool = True
    key: str = "audio"


@TOWERS.register("audio_frames", AudioFramesConfig)
class AudioFramesTower(nn.Module):
    """``audio`` [B, n_mels, audio_frames] -> Conv1d front-end at the video frame rate ->
    transformer -> per-frame tokens [B, T, D] and their mean [B, D]."""

    modality = "audio"

    def __init__(self, cfg: AudioFramesConfig, embed_dim: int, context: TowerContext) -> None:
        super().__init__()
        if context.audio_frames % context.num_frames:
            raise ValueError(
                f"audio_frames: {context.audio_frames} audio frames are not a whole number per "
                f"video frame ({context.num_frames} frames)"
            )
        self.key, self.normalize = cfg.key, cfg.normalize
        self.ratio = context.audio_frames // context.num_frames
        self.front = nn.Sequential(
            nn.Conv1d(context.n_mels, cfg.width, kernel_size=3, padding=1),
            nn.GELU(),
            nn.Conv1d(cfg.width, cfg.width, kernel_size=self.ratio, stride=self.ratio),
            nn.GELU(),
        )
        self.time = nn.Parameter(torch.randn(1, context.num_frames, cfg.width) * 0.02)
        self.encoder = transformer_encoder(cfg)
        self.norm = nn.LayerNorm(cfg.width)
        self.head = projection_head(cfg.width, embed_dim, cfg.projection)

    def forward(self, batch: dict[str, torch.Tensor]) -> TowerOutput:
        spec = batch[self.key]
        if spec.ndim != 3:
            raise ValueError(f"{self.key}: expected [B, n_mels, frames], got {tuple(spec.shape)}")
        frames = spec.shape[2] // self.ratio
        if spec.shape[2] % self.ratio or frames > self.time.shape[1]:
            raise ValueError(
                f"{self.key}: {spec.shape[2]} audio frames; the tower was built for at most "
                f"{self.time.shape[1] * self.ratio}, {self.ratio} per video frame"
            )
        if self.normalize:
            mean = spec.mean(dim=(1, 2), keepdim=True)
            spec = (spec - mean) / spec.std(dim=(1, 2), keepdim=True).clamp_min(1e-5)
        x = self.front(spec).transpose(1, 2) + self.time[:, :frames]  # [B, T, width]
        tokens = self.head(self.norm(self.encoder(x)))
        return TowerOutput(tokens.mean(dim=1), tokens, None)
