"""Every registered loss case (tests/conformance/cases_*.py) against its slow reference, with
gradcheck, and on 2 gloo processes against 1 (one spawn for all cases); see kit.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conformance.kit import WORLD, LossCase, discover, one_rank, value_and_grads, worker
from tests.processes import spawn_and_wait

CASES = discover()
DISTRIBUTED = [case for case in CASES if case.distributed]
LOSS_FAMILIES = Path(__file__).resolve().parents[2] / "modules" / "losses"


def by_name(cases: list[LossCase]) -> dict:
    return {"argvalues": cases, "ids": [case.name for case in cases]}


def close(got: torch.Tensor, want: torch.Tensor, case: LossCase, what: str) -> None:
    torch.testing.assert_close(
        got, want, atol=case.atol, rtol=case.rtol, msg=lambda m: f"{what}: {m}"
    )


def test_every_loss_family_registers_cases():
    families = {p.stem for p in LOSS_FAMILIES.glob("*.py") if p.stem != "__init__"}
    registered = {p.stem.removeprefix("cases_") for p in Path(__file__).parent.glob("cases_*.py")}
    assert families <= registered, f"no cases_<family>.py for {sorted(families - registered)}"


@pytest.mark.parametrize("case", **by_name(CASES))
def test_case_is_well_formed(case: LossCase):
    inputs = case.make_inputs()
    named = set(case.per_sample) | set(case.differentiable) | set(case.no_grad)
    assert named <= set(inputs), f"unknown inputs {sorted(named - set(inputs))}"
    assert not set(case.differentiable) & set(case.no_grad)
    for name in (*case.differentiable, *case.no_grad):
        assert inputs[name].dtype == torch.float64, f"{name} must be float64"
    if case.distributed:
        sizes = {inputs[name].shape[0] for name in case.per_sample}
        assert case.per_sample and all(size % WORLD == 0 for size in sizes), sizes
    if not (case.distributed and case.gradcheck):
        assert case.note, "say in `note` why the case opts out of a check"
    torch.testing.assert_close(case.make_inputs(), inputs, rtol=0, atol=0)  # deterministic


@pytest.mark.parametrize("case", **by_name(CASES))
def test_matches_the_slow_reference(case: LossCase):
    inputs = case.make_inputs()
    value, grads = value_and_grads(case.loss, inputs, case.differentiable + case.no_grad)
    want, want_grads = value_and_grads(case.reference, inputs, case.differentiable)
    close(value, want, case, "value")
    for name in case.differentiable:
        assert grads[name] is not None, f"no gradient reaches {name}"
        grad = want_grads[name]
        close(grads[name], torch.zeros_like(grads[name]) if grad is None else grad, case, name)
    for name in case.no_grad:
        assert grads[name] is None or not grads[name].any(), f"a gradient reaches {name}"


@pytest.mark.parametrize("case", **by_name([c for c in CASES if c.gradcheck]))
def test_gradcheck(case: LossCase):
    inputs = case.make_inputs()
    names = case.differentiable
    leaves = tuple(inputs[name].clone().requires_grad_() for name in names)

    def loss(*xs: torch.Tensor) -> torch.Tensor:
        return case.loss(**{**inputs, **dict(zip(names, xs, strict=True))})

    assert torch.autograd.gradcheck(loss, leaves, fast_mode=True)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    """Every distributed case on 2 gloo ranks, in one spawn."""
    tmp = tmp_path_factory.mktemp("conformance")
    names = [case.name for case in DISTRIBUTED]
    spawn_and_wait(worker, (str(tmp / "store"), str(tmp), names), WORLD)
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("case", **by_name(DISTRIBUTED))
def test_two_ranks_match_one_process(case: LossCase, two_ranks):
    ranks = [results[case.name] for results in two_ranks]
    for result in ranks:
        assert not isinstance(result, str), f"a rank failed:\n{result}"
    whole = one_rank(case, 0, 1)
    close(sum(r["loss"] for r in ranks) / WORLD, whole["loss"], case, "mean loss over ranks")
    for name in case.differentiable:
        per_rank = [r["grads"][name] for r in ranks]
        if name in case.per_sample:  # d(mean of the rank losses) / d(local rows)
            got = torch.cat(per_rank) / WORLD
        else:  # a replicated input: DDP averages the rank gradients
            got = sum(per_rank) / WORLD
        close(got, whole["grads"][name], case, f"gradient of {name}")
