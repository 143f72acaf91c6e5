"""LoRA (Hu et al., ICLR 2022) for the towers' ``nn.Linear`` and ``nn.Conv2d`` layers.

A layer's pretrained weight ``W`` is frozen and a low-rank update is learned beside it:

    W' = W + (alpha / r) * B A,   A: [r, fan_in] (Kaiming-uniform),  B: [out, r] (zeros),

so a freshly wrapped layer computes exactly what it computed before. For a convolution, ``A``
spans the flattened kernel (``in / groups * kh * kw``) and ``B A`` is reshaped to the kernel: the
same update as peft's (a ``k x k`` convolution to ``r`` channels followed by a 1 x 1 one), here
applied to the weight (towers are small, so merging costs less than two more convolutions).

The wrapped layers keep their parameter names (``weight``, ``bias``) and add ``lora_a``,
``lora_b``: a tower's pretrained state dict loads into its wrapped form unchanged (with
``strict=False``: the LoRA factors are new), and checkpoints stay plain tensors
(``weights_only`` loading). Not peft: peft is an optional extra's package at most, and the
methods must build on the core install (see the method's docstring).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _LoRA:
    """The low-rank factors of a layer with a ``weight`` (mixed into the layer classes)."""

    weight: nn.Parameter
    bias: nn.Parameter | None

    def _add_factors(self, rank: int, alpha: float) -> None:
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}")
        out, fan_in = self.weight.shape[0], self.weight[0].numel()
        self.lora_a = nn.Parameter(self.weight.new_empty(rank, fan_in))
        self.lora_b = nn.Parameter(self.weight.new_zeros(out, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.lora_scale = alpha / rank
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)

    def merged_weight(self) -> torch.Tensor:
        """``W + (alpha / r) B A`` in the weight's shape."""
        update = (self.lora_b @ self.lora_a).view_as(self.weight)
        return self.weight + self.lora_scale * update


class LoRALinear(_LoRA, nn.Linear):
    """``nn.Linear`` with a frozen weight and a trained low-rank update."""

    @classmethod
    def wrap(cls, layer: nn.Linear, rank: int, alpha: float) -> LoRALinear:
        new = cls(layer.in_features, layer.out_features, layer.bias is not None, device="meta")
        new.weight, new.bias = layer.weight, layer.bias
        new._add_factors(rank, alpha)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.merged_weight(), self.bias)


class LoRAConv2d(_LoRA, nn.Conv2d):
    """``nn.Conv2d`` with a frozen kernel and a trained low-rank update."""

    @classmethod
    def wrap(cls, layer: nn.Conv2d, rank: int, alpha: float) -> LoRAConv2d:
        new = cls(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            layer.groups,
            layer.bias is not None,
            layer.padding_mode,
            device="meta",
        )
        new.weight, new.bias = layer.weight, layer.bias
        new._add_factors(rank, alpha)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.merged_weight(), self.bias)


def add_lora(module: nn.Module, rank: int, alpha: float) -> int:
    """Freeze every parameter of ``module`` and give each of its ``nn.Linear`` and
    ``nn.Conv2d`` layers (in place) trained LoRA factors; returns how many layers got them."""
    module.requires_grad_(False)
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _LoRA):
                continue
            if type(child) is nn.Linear:
                setattr(parent, name, LoRALinear.wrap(child, rank, alpha))
            elif type(child) is nn.Conv2d:
                setattr(parent, name, LoRAConv2d.wrap(child, rank, alpha))
            else:
                continue
            count += 1
    return count
