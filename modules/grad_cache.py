"""A contrastive batch bigger than memory allows: gradient caching (Gao et al., 2021, "Scaling
Deep Contrastive Learning Batch Size under Memory Limited Setup"; open_clip's ``accum_freq``).

Accumulating the gradients of k separate batches (``accumulate_grad_batches``) is not a k-times
bigger contrastive batch: each small batch only sees its own negatives. Gradient caching gives
the exact big-batch gradient with the activation memory of one micro-batch:

1. encode every micro-batch without autograd and keep only the tower outputs;
2. compute the method's loss on the concatenated outputs (all negatives) and its gradient with
   respect to those outputs, and to any parameter the loss uses directly (the temperature);
3. encode each micro-batch again with autograd, replaying its random state, and back-propagate
   ``<outputs, cached gradient>`` (the chain rule, one micro-batch at a time).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from modules.towers.output import TowerOutput

Outputs = dict[str, TowerOutput]


def split_batch(batch: dict[str, Any], size: int) -> list[dict[str, Any]]:
    """``batch`` cut into consecutive micro-batches of ``size`` rows; values that are not
    per-sample tensors (first dimension the batch size) are shared by every micro-batch."""
    total = len(batch["index"])
    if size < 1 or total % size:
        raise ValueError(f"optim.micro_batch_size {size} must divide the local batch of {total}")
    return [
        {
            key: value[start : start + size]
            if isinstance(value, Tensor) and value.ndim and value.shape[0] == total
            else value
            for key, value in batch.items()
        }
        for start in range(0, total, size)
    ]


def _concat(parts: list[Outputs]) -> Outputs:
    """Per-modality outputs of the micro-batches joined along the batch dimension."""
    return {
        side: TowerOutput(
            *(
                None if fields[0] is None else torch.cat(fields)
                for fields in zip(*(part[side] for part in parts), strict=True)
            )
        )
        for side in parts[0]
    }


def _differentiable(outputs: Outputs) -> list[Tensor]:
    """The floating-point tensors of ``outputs`` in a fixed order (masks are not)."""
    return [
        field
        for side in sorted(outputs)
        for field in outputs[side]
        if field is not None and field.is_floating_point()
    ]


class RandomState:
    """The CPU and accelerator random state at capture, to replay a forward pass exactly
    (dropout, stochastic depth) without disturbing the random stream outside the replay."""

    def __init__(self, device: torch.device) -> None:
        self.devices = [device] if device.type == "cuda" else []
        self.cpu = torch.get_rng_state()
        self.accelerator = [torch.cuda.get_rng_state(d) for d in self.devices]

    @contextmanager
    def replay(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu)
            for device, state in zip(self.devices, self.accelerator, strict=True):
                torch.cuda.set_rng_state(state, device)
            yield


def cached_backward(
    encode: Callable[[dict[str, Any]], Outputs],
    loss_fn: Callable[[Outputs], Tensor],
    params: list[nn.Parameter],
    batch: dict[str, Any],
    micro_batch_size: int,
    backward: Callable[[Tensor, bool], None],
) -> Tensor:
    """Accumulate into ``params``' ``.grad`` the gradient of ``loss_fn(encode(batch))``
    holding the autograd graph of only ``micro_batch_size`` samples at a time; returns the loss.

    ``encode``: a batch -> tower outputs; ``loss_fn``: the whole batch's outputs -> scalar
    loss; ``backward``: how to back-propagate a scalar (``LightningModule.manual_backward``
    under Lightning, so that DDP, precision plugins and hooks see every pass). It is called
    once per micro-batch, each time with every trainable parameter in the graph.
    """
    micro_batches = split_batch(batch, micro_batch_size)
    device = next(iter(batch.values())).device
    states, cached = [], []
    with torch.no_grad():
        for micro in micro_batches:
            states.append(RandomState(device))
            cached.append(encode(micro))
    outputs = _concat(cached)
    leaves = [t.detach().requires_grad_() for t in _differentiable(outputs)]
    fields = iter(leaves)
    outputs = {
        side: TowerOutput(
            *(next(fields) if t is not None and t.is_floating_point() else t for t in outputs[side])
        )
        for side in sorted(outputs)
    }
    loss = loss_fn(outputs)
    grads = torch.autograd.grad(loss, [*leaves, *params], allow_unused=True)
    output_grads, param_grads = grads[: len(leaves)], grads[len(leaves) :]
    # Parameters the loss reads directly (e.g. the temperature): their share in every pass.
    direct = [
        (p, g / len(micro_batches))
        for p, g in zip(params, param_grads, strict=True)
        if g is not None
    ]
    start = 0
    for m, (micro, state) in enumerate(zip(micro_batches, states, strict=True)):
        size = len(micro["index"])
        with state.replay():
            fresh = _differentiable(encode(micro))
        surrogate = sum(
            (t * g[start : start + size]).sum()
            for t, g in zip(fresh, output_grads, strict=True)
            if g is not None
        )
        surrogate = surrogate + sum((p * g).sum() for p, g in direct)
        backward(surrogate, m == len(micro_batches) - 1)
        start += size
    return loss.detach()
