"""Albumentations pipelines from YAML, and the uint8 image -> tensor conversion.

A pipeline is a list of steps ``{name: <albumentations class>, **kwargs}``, e.g.::

    augment:
      train:
        - {name: GaussNoise, std_range: [0.02, 0.05], p: 0.5}
        - {name: OneOf, p: 0.3, transforms: [{name: Blur, blur_limit: 3}, {name: Downscale}]}

Steps run on HWC uint8 numpy images, before :func:`to_tensor`. The default is no augmentation,
on purpose: flips, rotations and colour jitter change what a caption says is true ("left of",
"red"), so they turn positives into negatives on captioned data. Choose steps that keep the
captions true.
"""

from __future__ import annotations

import modules.env  # noqa: F401  (first: albumentations' update check is off)

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import albumentations as A
import numpy as np
import torch


@dataclass
class AugmentConfig:
    """Albumentations steps ``[{name: <class>, **kwargs}]`` (see datamodules/transforms.py)."""

    train: list[dict[str, Any]] = field(default_factory=list)
    eval: list[dict[str, Any]] = field(default_factory=list)


def _plain(value: Any) -> Any:
    """Nested mappings/sequences (e.g. OmegaConf containers) as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(v) for v in value]
    return value


def _known() -> list[str]:
    return sorted(
        name
        for name in dir(A)
        if isinstance(getattr(A, name), type)
        and issubclass(getattr(A, name), A.BasicTransform | A.BaseCompose)
    )


def build_step(step: Mapping[str, Any]) -> A.BasicTransform | A.BaseCompose:
    """One albumentations transform from ``{name: ..., **kwargs}``; a ``transforms`` list
    (for ``OneOf``, ``SomeOf``, ``Sequential``) is built recursively."""
    kwargs = _plain(step)
    if not isinstance(kwargs, dict) or "name" not in kwargs:
        raise ValueError(f"an augmentation step must be a mapping with a 'name', got {step!r}")
    name = kwargs.pop("name")
    known = _known()
    if name not in known:
        close = difflib.get_close_matches(str(name), known, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known)}"
        raise ValueError(f"unknown albumentations transform {name!r}; {hint}")
    if "transforms" in kwargs:
        kwargs["transforms"] = [build_step(s) for s in kwargs["transforms"]]
    return getattr(A, name)(**kwargs)


def build_transforms(steps: Sequence[Mapping[str, Any]] | None) -> A.Compose | None:
    """``A.Compose`` of the steps, or None for an empty list (no augmentation)."""
    if not steps:
        return None
    return A.Compose([build_step(step) for step in steps])


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """HWC (or a clip's THWC) uint8 -> CHW (TCHW) float32 in [-1, 1] (copies read-only input
    such as a memory map). Scaled in place: one float buffer rather than three, the same
    values as ``x.float() / 127.5 - 1``."""
    array = np.require(pixels, requirements=("C", "W"))
    return torch.from_numpy(array).movedim(-1, -3).float().div_(127.5).sub_(1.0)


class ImageTransform:
    """Augment (optional) then convert; checks that the augmentation kept the shape, so a
    batch can be stacked."""

    target, noun, ndim = "image", "image", None

    def __init__(self, steps: Sequence[Mapping[str, Any]] | None = None) -> None:
        self.pipeline = build_transforms(steps)

    def __call__(self, pixels: np.ndarray) -> torch.Tensor:
        if self.ndim is not None and pixels.ndim != self.ndim:
            raise ValueError(f"expected a {self.noun} of {self.ndim} axes, got {pixels.shape}")
        if self.pipeline is not None:
            out = self.pipeline(**{self.target: np.asarray(pixels)})[self.target]
            if out.shape != pixels.shape:
                raise ValueError(
                    f"augmentation changed the {self.noun} shape {pixels.shape} -> {out.shape}; "
                    "add a Resize step to restore it"
                )
            pixels = out
        return to_tensor(pixels)


class ClipTransform(ImageTransform):
    """Augment the frames of a clip with one draw of the random parameters (albumentations'
    ``images`` target), so a crop or a brightness change is the same in every frame and motion
    stays motion; then convert ``[T, H, W, C]`` uint8 to ``[T, C, H, W]`` in [-1, 1]."""

    target, noun, ndim = "images", "clip", 4
