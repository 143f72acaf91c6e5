"""Every registered method, built from its YAML on tiny data, passes three checks of one step:

(a) 2 gloo processes, each with its half of the batch, against 1 process on the whole batch:
    the mean of the ranks' losses and the DDP average of their gradients equal the one-process
    loss and gradient (float64);
(b) gradient caching (micro-batches of half and a quarter of the batch) gives the plain step's
    loss and gradient;
(c) a checkpoint (hyper-parameters + state dict, loaded with ``weights_only``) rebuilds a
    module with the same embeddings.

A method is found by its registry name; its YAML is ``experiments/<name>.yaml`` or the first
YAML whose last stage runs it. Methods whose loss draws random numbers name the overrides that
remove them (``deterministic_overrides``). Nothing here is edited when a method is added.
"""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from experiments.config import load_experiment
from modules.base import AlignmentModule, module_from_checkpoint
from modules.grad_cache import cached_backward
from modules.registry import METHODS
from tests.processes import spawn_and_wait

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
BATCH = 8
WORLD = 2
TINY = [
    "data.num_train=48",
    "data.num_val=8",
    "data.num_test=8",
    f"data.batch_size={BATCH}",
    "data.eval_batch_size=16",
]


def yaml_of(method: str) -> tuple[Path, str]:
    """The YAML that runs ``method`` in its last stage, and that stage's override prefix."""
    candidates = sorted(EXPERIMENTS.glob("*.yaml"), key=lambda p: (p.stem != method, p.name))
    for path in candidates:
        if path.name == "base.yaml":
            continue
        stages = load_experiment(path, [])
        if stages[-1].plain["method"]["name"] == method:
            prefix = f"stages.{stages[-1].name}." if len(stages) > 1 else ""
            return path, prefix
    raise LookupError(f"no experiments/*.yaml runs method {method!r}")


def _state(module: AlignmentModule) -> dict:
    return {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}


def prepared(method: str) -> tuple[dict, dict]:
    """(checkpoint of an untrained module, one training batch) for ``method``, float64."""
    # imported here, not at the top: the spawned workers import this module, and need none of
    # what experiments.stages brings (MLflow, the callbacks, the datamodules: seconds each)
    from experiments.stages import build

    path, prefix = yaml_of(method)
    cls = METHODS.get(method).cls
    extra = [
        f"{prefix}{k}={v}" if k.startswith("model.") else f"{prefix}method.{k}={v}"
        for k, v in cls.deterministic_overrides.items()
    ]
    stages = load_experiment(path, [*TINY, *(f"{prefix}{o}" for o in TINY), *extra])
    cfg = stages[-1].plain
    torch.manual_seed(0)
    datamodule, module = build(cfg)
    if module.requires_teacher:
        module.set_teacher(module.state_dict())
    batch = next(iter(datamodule.train_dataloader()))
    batch = {
        k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v
        for k, v in batch.items()
    }
    return _state(module.double()), batch


def rebuilt(state: dict) -> AlignmentModule:
    """The module of a checkpoint, in training mode and float64 (teacher included)."""
    module = (
        METHODS.get(state["hyper_parameters"]["method"]["name"])
        .cls(**state["hyper_parameters"])
        .double()
    )
    if module.requires_teacher:
        module.set_teacher(state["state_dict"])
    module.load_state_dict(state["state_dict"], strict=True)
    return module.train()


def step(module: AlignmentModule, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of one training step on ``batch`` and the gradient of every trained parameter."""
    module.zero_grad()
    loss = module.total_loss(module.losses(batch, module.encode(batch)))
    loss.backward()
    grads = {
        name: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().clone()
        for name, p in module.named_parameters()
        if p.requires_grad
    }
    return loss.detach(), grads


def rows(batch: dict, rank: int, world: int) -> dict:
    """Rank ``rank``'s rows of every per-sample entry of ``batch``."""
    size = len(batch["index"])
    local = size // world
    return {
        k: v[rank * local : (rank + 1) * local]
        if torch.is_tensor(v) and v.ndim and v.shape[0] == size
        else v
        for k, v in batch.items()
    }


def _worker(rank: int, folder: str, port: int, names: list[str]) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=timedelta(seconds=60),
    )
    torch.set_num_threads(1)
    for name in names:
        saved = torch.load(Path(folder) / f"{name}.pt", weights_only=False)
        module = rebuilt(saved["state"])
        torch.manual_seed(0)
        loss, grads = step(module, rows(saved["batch"], rank, WORLD))
        mean_loss = loss.clone()
        dist.all_reduce(mean_loss)
        for grad in grads.values():
            dist.all_reduce(grad)
        if rank == 0:
            result = {"loss": mean_loss / WORLD, "grads": {k: g / WORLD for k, g in grads.items()}}
            torch.save(result, Path(folder) / f"{name}.ddp.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def methods(tmp_path_factory) -> tuple[Path, dict[str, tuple[dict, dict]]]:
    """Every method prepared once, and the 2-process step of all of them in one spawn."""
    folder = tmp_path_factory.mktemp("methods")
    prepared_all = {}
    for name in METHODS.names():
        state, batch = prepared(name)
        prepared_all[name] = (state, batch)
        torch.save({"state": state, "batch": batch}, folder / f"{name}.pt")
    port = 29000 + (hash(str(folder)) % 2000)
    spawn_and_wait(_worker, (str(folder), port, sorted(prepared_all)), WORLD, timeout=240)
    return folder, prepared_all


@pytest.mark.parametrize("name", METHODS.names())
def test_two_processes_take_the_one_process_step(methods, name: str) -> None:
    folder, prepared_all = methods
    state, batch = prepared_all[name]
    torch.manual_seed(0)
    loss, grads = step(rebuilt(state), batch)
    ddp = torch.load(folder / f"{name}.ddp.pt", weights_only=False)
    torch.testing.assert_close(ddp["loss"], loss, rtol=0, atol=1e-9)
    assert grads.keys() == ddp["grads"].keys()
    for key, grad in grads.items():
        torch.testing.assert_close(ddp["grads"][key], grad, rtol=1e-7, atol=1e-9, msg=key)


@pytest.mark.parametrize("name", METHODS.names())
def test_gradient_caching_takes_the_plain_step(methods, name: str) -> None:
    _, prepared_all = methods
    state, batch = prepared_all[name]
    torch.manual_seed(0)
    loss, grads = step(rebuilt(state), batch)
    for micro in (BATCH // 2, BATCH // 4):
        module = rebuilt(state)
        module.zero_grad()
        params = [p for p in module.parameters() if p.requires_grad]
        torch.manual_seed(0)
        cached = cached_backward(
            module.encode,
            lambda outputs, m=module: m.total_loss(m.losses(batch, outputs)),
            params,
            batch,
            micro,
            lambda surrogate, last: surrogate.backward(),
        )
        torch.testing.assert_close(cached, loss, rtol=0, atol=1e-9)
        for key, p in module.named_parameters():
            if p.requires_grad:
                got = p.grad if p.grad is not None else torch.zeros_like(p)
                torch.testing.assert_close(got, grads[key], rtol=1e-7, atol=1e-9, msg=key)


@pytest.mark.parametrize("name", METHODS.names())
def test_checkpoint_round_trip_gives_the_same_embeddings(methods, name: str) -> None:
    _, prepared_all = methods
    state, batch = prepared_all[name]
    module = rebuilt(state).eval()
    buffer = io.BytesIO()
    torch.save(_state(module), buffer)
    buffer.seek(0)
    again = module_from_checkpoint(torch.load(buffer, weights_only=True)).double()
    with torch.no_grad():
        before, after = module.encode(batch), again.encode(batch)
        for side in module.modalities:
            if side in before:
                torch.testing.assert_close(
                    again.embedding(side, after[side]), module.embedding(side, before[side])
                )
