"""Rank helpers and the one gather that contrastive losses use under DDP.

Losses compute local rows against global columns. That is exact only if the gather carries
gradients back to the rank that produced each slice: `gather_with_grad` sums the column
gradients of every rank's loss (all_reduce) and hands each rank its own slice. With DDP's
gradient averaging this reproduces the single-process gradient on the concatenated batch.
"""

import torch
import torch.distributed as dist
from torch import Tensor


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the default group; 1 when torch.distributed is not initialised."""
    return dist.get_world_size() if _initialized() else 1


def rank() -> int:
    """This process's rank in the default group; 0 when torch.distributed is not initialised."""
    return dist.get_rank() if _initialized() else 0


def _check_equal_batches(x: Tensor) -> None:
    """Fail loudly on unequal local batch sizes (all_gather needs equal shapes)."""
    size = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.empty_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    sizes_list = [int(s.item()) for s in sizes]
    assert len(set(sizes_list)) == 1, (
        f"gather needs equal local batch sizes on every rank, got {sizes_list}; "
        "use drop_last=True (or pad) in the training DataLoader"
    )


def _all_gather_cat(x: Tensor) -> Tensor:
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather + cat forward; all_reduce(SUM) of the gradient, own slice backward."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.local = x.shape[0]
        return _all_gather_cat(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = rank() * ctx.local
        return grad[start : start + ctx.local]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate `x` [b, ...] from all ranks along dim 0 -> [world*b, ...], keeping gradients.

    Rank r's slice is rows r*b:(r+1)*b. The backward sums every rank's gradient for the
    gathered tensor, so each rank receives d(sum_r' loss_r')/d x_r. Identity for one process.
    """
    if world_size() == 1:
        return x
    _check_equal_batches(x)
    return _GatherWithGrad.apply(x)


def gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate `x` from all ranks along dim 0, detached (ids, frozen-teacher features)."""
    x = x.detach()
    if world_size() == 1:
        return x
    _check_equal_batches(x)
    return _all_gather_cat(x)


def all_ranks(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank (one all-reduce; ``flag`` itself for one process)."""
    if world_size() == 1:
        return flag
    value = torch.tensor([int(flag)], device=_device())
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def _device() -> torch.device:
    """The device collectives of the default group run on (NCCL needs CUDA tensors)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
