"""The loss conformance kit: what a loss registers and how it is checked.

Every loss family registers ``CASES: list[LossCase]`` in ``tests/conformance/cases_<family>.py``;
``test_conformance.py`` finds them by glob and checks each case

(a) against its independent slow reference on the whole batch (value and gradients, float64);
(b) with ``torch.autograd.gradcheck`` (``gradcheck=True``);
(c) on 2 gloo processes, each holding its half of the ``per_sample`` rows, against 1 process on
    the whole batch (``distributed=True``), all cases in one spawn.

The DDP convention checked by (c) (one for every loss): a loss takes this rank's LOCAL rows and
gathers what it needs inside. Then the mean over ranks of the per-rank losses equals the
one-process loss; the gradient of that mean w.r.t. a rank's local rows (its own backward, which
already sums every rank's column gradients through ``gather_with_grad``, divided by the world
size) equals those rows of the one-process gradient; and for a replicated input (a parameter
such as a logit scale) the sum over ranks of each rank's gradient, divided by the world size
(DDP's averaging), equals the one-process gradient.
"""

from __future__ import annotations

import importlib
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

HERE = Path(__file__).resolve().parent
WORLD = 2
F64 = torch.float64


def randn(generator: torch.Generator, *shape: int) -> Tensor:
    """Standard normal float64 draws from ``generator``."""
    return torch.randn(*shape, generator=generator, dtype=F64)


def unit(generator: torch.Generator, *shape: int) -> Tensor:
    """Rows (last dim) L2-normalised: the features a contrastive loss usually receives."""
    return torch.nn.functional.normalize(randn(generator, *shape), dim=-1)


@dataclass(frozen=True)
class LossCase:
    """One way of calling one loss, with inputs and an independent slow reference.

    ``inputs(generator)`` returns named tensors (float64 for real values); tensors named in
    ``per_sample`` hold the GLOBAL batch in dim 0 (an even size) and are split across ranks by
    rows, the others are replicated. ``loss(**inputs)`` is the implementation, called on one
    rank's rows; ``reference(**inputs)`` the slow reference on the whole batch. Gradients are
    compared for ``differentiable``; inputs in ``no_grad`` must receive none (stop-gradients,
    frozen teachers). ``note`` says why a case opts out of ``distributed`` or ``gradcheck``.
    Random draws of a loss (noise, references) must be inputs, so that every run sees the same.
    """

    name: str
    inputs: Callable[[torch.Generator], dict[str, Tensor]]
    per_sample: tuple[str, ...]
    loss: Callable[..., Tensor]
    reference: Callable[..., Tensor]
    differentiable: tuple[str, ...]
    distributed: bool = True
    gradcheck: bool = True
    no_grad: tuple[str, ...] = ()
    atol: float = 1e-10
    rtol: float = 0.0
    note: str = ""

    def make_inputs(self) -> dict[str, Tensor]:
        """The case's inputs, drawn from a generator seeded by its name (same on every rank)."""
        seed = zlib.crc32(self.name.encode())
        return self.inputs(torch.Generator().manual_seed(seed))


def discover() -> list[LossCase]:
    """Every case of every ``cases_*.py`` next to this file (names must be unique)."""
    cases: list[LossCase] = []
    for path in sorted(HERE.glob("cases_*.py")):
        module = importlib.import_module(f"tests.conformance.{path.stem}")
        cases.extend(module.CASES)
    names = [case.name for case in cases]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    assert not duplicates, f"duplicate case names: {duplicates}"
    return cases


def rows_of(case: LossCase, inputs: dict[str, Tensor], rank: int, world: int) -> dict[str, Tensor]:
    """Rank ``rank``'s inputs: its contiguous block of the ``per_sample`` rows, the rest whole."""

    def local(name: str, x: Tensor) -> Tensor:
        if name not in case.per_sample:
            return x
        size = x.shape[0] // world
        return x[rank * size : (rank + 1) * size]

    return {name: local(name, x) for name, x in inputs.items()}


def cotangent(output: Tensor) -> Tensor:
    """A fixed direction that turns a non-scalar output into a scalar (1 for a scalar)."""
    if output.dim() == 0:
        return torch.ones_like(output)
    generator = torch.Generator().manual_seed(output.numel())
    return torch.randn(output.shape, generator=generator, dtype=output.dtype)


def value_and_grads(
    fn: Callable[..., Tensor], inputs: dict[str, Tensor], names: tuple[str, ...]
) -> tuple[Tensor, dict[str, Tensor | None]]:
    """``fn(**inputs)`` (detached) and its gradients w.r.t. ``names`` (None where none flows);
    the inputs are cloned into fresh leaves first."""
    leaves = {
        name: x.detach().clone().requires_grad_(name in names) if x.is_floating_point() else x
        for name, x in inputs.items()
    }
    output = fn(**leaves)
    wanted = [leaves[name] for name in names]
    grads: tuple[Tensor | None, ...] = ()
    if wanted:
        if output.requires_grad:
            grads = torch.autograd.grad(
                (output * cotangent(output)).sum(), wanted, allow_unused=True
            )
        else:
            grads = (None,) * len(wanted)
    return output.detach(), dict(zip(names, grads, strict=True))


def zero_if_none(grad: Tensor | None, like: Tensor) -> Tensor:
    """A rank that no gradient reaches contributes zeros (e.g. no positive on that rank)."""
    return torch.zeros_like(like) if grad is None else grad


def one_rank(case: LossCase, rank: int, world: int) -> dict[str, object]:
    """This rank's loss and gradients (w.r.t. its local rows / the replicated inputs)."""
    local = rows_of(case, case.make_inputs(), rank, world)
    value, grads = value_and_grads(case.loss, local, case.differentiable)
    return {
        "loss": value,
        "grads": {name: zero_if_none(g, local[name]) for name, g in grads.items()},
    }


def worker(rank: int, store_path: str, out_dir: str, names: list[str]) -> None:
    """One gloo rank: every named case on this rank's rows; results (or the traceback of a
    failing case) to ``out_dir/rank<r>.pt``."""
    torch.set_num_threads(1)
    store = dist.FileStore(store_path, WORLD)
    dist.init_process_group(
        "gloo", store=store, rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
    )
    cases = {case.name: case for case in discover()}
    results: dict[str, object] = {}
    for name in names:
        try:
            results[name] = one_rank(cases[name], rank, WORLD)
        except Exception:  # reported by that case's test, the other cases still run
            results[name] = traceback.format_exc()
    torch.save(results, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()
