"""Two gloo processes, each with half of a float64 batch, against one process on the whole batch.

DDP averages parameter gradients over ranks, so the averaged per-rank loss and parameter
gradients must equal the single-process ones. For an input x_r owned by rank r the
single-process gradient is (1/world) * rank r's gradient (rank r's backward already holds
d(sum of all ranks' losses)/d x_r thanks to the all_reduce in gather_with_grad).
One spawn runs every case; workers write their results to files the test then compares.
"""

import math

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from modules.distributed import gather_no_grad, gather_with_grad, rank, world_size
from modules.losses.clip_refine import hycd_loss
from modules.losses.contrastive import align_loss, clip_loss
from modules.losses.contrastive_gap import alignment, cross_modal_uniformity, in_modal_uniformity
from tests.processes import spawn_and_wait

WORLD, N, IN_DIM, DIM = 2, 8, 6, 5
# ids 5 and 2 have positives on both ranks (rows 0/5 and 3/4).
IDS = torch.tensor([5, 1, 1, 2, 2, 5, 3, 3])
TOL = dict(rtol=0.0, atol=1e-10)
PARAMS = ("w_image", "w_text", "log_scale")
INPUTS = ("x_image", "x_text")


def _data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    return {
        "x_image": randn(N, IN_DIM),
        "x_text": randn(N, IN_DIM),
        "w_image": randn(IN_DIM, DIM),
        "w_text": randn(IN_DIM, DIM),
        "log_scale": torch.tensor(math.log(4.0), dtype=torch.float64),
        "teacher_image": 2.0 * randn(N, DIM),
        "teacher_text": 2.0 * randn(N, DIM),
    }


def _loss(case: str, t: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    image, text = t["x_image"] @ t["w_image"], t["x_text"] @ t["w_text"]
    if case.startswith("clip"):
        image, text, scale = (
            F.normalize(image, dim=1),
            F.normalize(text, dim=1),
            t["log_scale"].exp(),
        )
        if case == "clip_diagonal":
            return clip_loss(image, text, scale)
        if case == "clip_diagonal_smooth":
            return clip_loss(image, text, scale, label_smoothing=0.1)
        if case == "clip_multi_chunked":  # tiles of 3 logits: several per row and column
            return clip_loss(image, text, scale, ids=ids, label_smoothing=0.1, block_elements=3)
        if case == "clip_align_sum":
            return align_loss(image, text, scale, ids=ids, label_smoothing=0.1)
        if case == "clip_cuaxu":  # as modules/cuaxu.py: regularisers on the gathered batch
            x, y = gather_with_grad(image), gather_with_grad(text)
            return (
                clip_loss(image, text, scale, ids=ids)
                + in_modal_uniformity(x, y)
                + cross_modal_uniformity(x, y)
                + alignment(x, y)
            )
        return clip_loss(image, text, scale, ids=ids, label_smoothing=0.1)
    if case == "hycd_diagonal":
        return hycd_loss(image, text, t["teacher_image"], t["teacher_text"], alpha=0.5, t_kd=1.0)
    return hycd_loss(image, text, t["teacher_image"], t["teacher_text"], 0.3, 2.0, ids=ids)


CASES = (
    "clip_diagonal",
    "clip_diagonal_smooth",
    "clip_multi",
    "clip_multi_chunked",
    "clip_align_sum",
    "clip_cuaxu",
    "hycd_diagonal",
    "hycd_multi",
)


def _loss_and_grads(case: str, rows: slice) -> dict[str, torch.Tensor]:
    """Loss and gradients for the samples in `rows` (all parameters are replicated)."""
    data = _data()
    leaves = {k: data[k][rows].clone() if k in INPUTS else data[k].clone() for k in INPUTS + PARAMS}
    for leaf in leaves.values():
        leaf.requires_grad_()
    local = {
        **leaves,
        "teacher_image": data["teacher_image"][rows],
        "teacher_text": data["teacher_text"][rows],
    }
    loss = _loss(case, local, IDS[rows])
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    out = {"loss": loss.detach()}
    for (name, leaf), grad in zip(leaves.items(), grads, strict=True):
        out[name] = torch.zeros_like(leaf) if grad is None else grad
    return out


def _worker(local_rank: int, store_path: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    store = dist.FileStore(store_path, WORLD)
    dist.init_process_group("gloo", store=store, rank=local_rank, world_size=WORLD)
    b = N // WORLD
    result: dict = {"world_size": world_size(), "rank": rank()}
    for case in CASES:
        result[case] = _loss_and_grads(case, slice(local_rank * b, (local_rank + 1) * b))

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


@pytest.mark.parametrize("case", CASES)
def test_two_ranks_match_one_process(rank_results, case):
    full = _loss_and_grads(case, slice(None))
    per_rank = [r[case] for r in rank_results]
    torch.testing.assert_close(sum(r["loss"] for r in per_rank) / WORLD, full["loss"], **TOL)
    for name in PARAMS:
        torch.testing.assert_close(sum(r[name] for r in per_rank) / WORLD, full[name], **TOL)
    for name in INPUTS:
        torch.testing.assert_close(
            torch.cat([r[name] for r in per_rank]) / WORLD, full[name], **TOL
        )


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
