"""The rank helpers and the two gathers on two gloo processes, and their single-process identity.

The losses' own 2-process checks (every loss against one process on the whole batch) live in
the conformance kit (tests/conformance/).
"""

import pytest
import torch
import torch.distributed as dist

from modules.distributed import gather_no_grad, gather_with_grad, rank, world_size
from tests.processes import spawn_and_wait

WORLD = 2


def _worker(local_rank: int, store_path: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    store = dist.FileStore(store_path, WORLD)
    dist.init_process_group("gloo", store=store, rank=local_rank, world_size=WORLD)
    result: dict = {"world_size": world_size(), "rank": rank()}
    # gather_with_grad: forward concatenates, backward sums every rank's column gradient.
    x = (torch.arange(6, dtype=torch.float64).view(3, 2) + 10 * local_rank).requires_grad_()
    gathered = gather_with_grad(x)
    weight = torch.randn(
        6, 2, generator=torch.Generator().manual_seed(local_rank), dtype=torch.float64
    )
    (grad_x,) = torch.autograd.grad((gathered * weight).sum(), x)
    result["gather"] = {"value": gathered.detach(), "grad": grad_x}
    ids = gather_no_grad(torch.arange(3) + 3 * local_rank)
    result["gather_no_grad"] = {"value": ids, "requires_grad": gather_no_grad(x).requires_grad}

    try:  # unequal local batches must fail with a clear message on every rank
        gather_with_grad(torch.zeros(2 + local_rank, 3))
        result["unequal"] = ""
    except AssertionError as err:
        result["unequal"] = str(err)
    torch.save(result, f"{out_dir}/rank{local_rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("ddp")
    spawn_and_wait(_worker, (str(tmp / "store"), str(tmp)), WORLD)
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


def test_rank_helpers_and_gathers(rank_results):
    assert [(r["world_size"], r["rank"]) for r in rank_results] == [(2, 0), (2, 1)]
    xs = [torch.arange(6, dtype=torch.float64).view(3, 2) + 10 * r for r in range(WORLD)]
    weights = [
        torch.randn(6, 2, generator=torch.Generator().manual_seed(r), dtype=torch.float64)
        for r in range(WORLD)
    ]
    summed = weights[0] + weights[1]
    for r, result in enumerate(rank_results):
        torch.testing.assert_close(result["gather"]["value"], torch.cat(xs))
        torch.testing.assert_close(result["gather"]["grad"], summed[3 * r : 3 * r + 3])
        assert torch.equal(result["gather_no_grad"]["value"], torch.arange(6))
        assert result["gather_no_grad"]["requires_grad"] is False
        assert "equal local batch sizes" in result["unequal"] and "[2, 3]" in result["unequal"]


def test_single_process_is_identity():
    assert world_size() == 1 and rank() == 0
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x
    detached = gather_no_grad(x)
    assert not detached.requires_grad and torch.equal(detached, x.detach())
