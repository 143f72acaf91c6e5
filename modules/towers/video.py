"""Video tower: an image tower applied to every frame, then a temporal model over the frames.

``spatial: flatten`` turns each frame's feature map (the image tower's tokens) into the frame
embedding with one linear layer over all positions, so the embedding says *where* things are
and the temporal model can see motion; ``spatial: pooled`` uses the image tower's pooled output,
which for the CNN is a spatial mean: position is lost and a moving shape looks the same in
every frame. ``motion: true`` gives the temporal model each frame's change from the previous
frame next to the frame itself (as RGB-difference streams do, Wang et al. 2016, TSN): played
backwards, every change flips sign, so order is explicit rather than left to the time embeddings.
``temporal: transformer`` adds learned time embeddings and a small pre-norm transformer with a
[CLS] token, so the embedding can depend on frame order (direction of motion, which event came
first). ``temporal: mean`` averages the frame embeddings: order-invariant by construction, the
baseline that shows whether a dataset needs time at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from modules.registry import TOWERS, UnknownNameError, as_dataclass
from modules.towers import TowerContext, build_tower
from modules.towers.layers import TransformerConfig, projection_head, transformer_encoder
from modules.towers.output import TowerOutput

TEMPORAL = ("transformer", "mean")
SPATIAL = ("flatten", "pooled")


@dataclass
class FramesConfig(TransformerConfig):
    """``frame``: the image tower block applied per frame (it projects to ``width``);
    ``width``/``depth``/``heads``: the temporal transformer."""

    name: str = "frames"
    frame: Any = field(default_factory=lambda: {"name": "cnn", "channels": [16, 32, 64, 128]})
    spatial: str = "flatten"
    motion: bool = True
    temporal: str = "transformer"
    key: str = "video"

    def __post_init__(self) -> None:
        if self.temporal not in TEMPORAL:
            raise ValueError(f"temporal: expected one of {TEMPORAL}, got {self.temporal!r}")
        if self.spatial not in SPATIAL:
            raise ValueError(f"spatial: expected one of {SPATIAL}, got {self.spatial!r}")
        frame_config(self.frame)


def frame_config(frame: Any) -> Any:
    """The per-frame image tower's config, validated (errors name ``frame.<key>``)."""
    if not isinstance(frame, dict) or "name" not in frame:
        raise ValueError("frame: expected an image tower block with a 'name'")
    try:
        entry = TOWERS.get(frame["name"])
    except UnknownNameError as err:
        raise ValueError(f"frame.name: {err}") from None
    if entry.cls.modality != "image":
        raise ValueError(f"frame.name: {frame['name']!r} is not an image tower")
    try:
        return as_dataclass(entry.config, frame)
    except OmegaConfBaseException as err:
        raise ValueError(f"frame.{err.full_key}: {str(err.msg).splitlines()[0]}") from None


@TOWERS.register("frames", FramesConfig)
class FramesTower(nn.Module):
    """``video`` [B, T, C, S, S] -> per-frame image tower -> frame embedding (flattened
    feature map or pooled) -> temporal model -> pooled [B, D].

    Tokens are the T frame embeddings after the temporal model (projected to D).
    """

    modality = "video"

    def __init__(self, cfg: FramesConfig, embed_dim: int, context: TowerContext) -> None:
        super().__init__()
        self.key = cfg.key
        self.frame = build_tower(frame_config(cfg.frame), cfg.width, context)
        self.spatial = None
        if cfg.spatial == "flatten":
            probe = torch.zeros(1, context.in_channels, context.image_size, context.image_size)
            with torch.no_grad():
                positions = self.frame({self.frame.key: probe}).tokens.shape[1]
            self.spatial = nn.Linear(positions * cfg.width, cfg.width)
        self.motion = nn.Linear(2 * cfg.width, cfg.width) if cfg.motion else None
        self.temporal = cfg.temporal
        if cfg.temporal == "transformer":
            self.cls = nn.Parameter(torch.zeros(1, 1, cfg.width))
            self.time = nn.Parameter(torch.randn(1, context.num_frames + 1, cfg.width) * 0.02)
            self.encoder = transformer_encoder(cfg)
        self.norm = nn.LayerNorm(cfg.width)
        self.head = projection_head(cfg.width, embed_dim, cfg.projection)

    def forward(self, batch: dict[str, torch.Tensor]) -> TowerOutput:
        video = batch[self.key]
        if video.ndim != 5:
            raise ValueError(
                f"{self.key}: expected [B, T, C, H, W], got shape {tuple(video.shape)}"
            )
        b, t = video.shape[:2]
        out = self.frame({self.frame.key: video.flatten(0, 1)})
        if self.spatial is None:
            frames = out.pooled.view(b, t, -1)
        else:
            frames = self.spatial(out.tokens.reshape(b, t, -1))
        if self.motion is not None:
            change = torch.cat([torch.zeros_like(frames[:, :1]), frames.diff(dim=1)], dim=1)
            frames = self.motion(torch.cat([frames, change], dim=-1))
        if self.temporal == "mean":
            x = self.norm(frames)
            return TowerOutput(self.head(x.mean(dim=1)), self.head(x), None)
        if t + 1 > self.time.shape[1]:
            raise ValueError(
                f"{self.key}: {t} frames; the tower was built for {self.time.shape[1] - 1}"
            )
        x = torch.cat([self.cls.expand(b, -1, -1), frames], dim=1) + self.time[:, : t + 1]
        x = self.norm(self.encoder(x))
        return TowerOutput(self.head(x[:, 0]), self.head(x[:, 1:]), None)
