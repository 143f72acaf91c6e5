"""The ``space_probe`` evaluator (callbacks/spaces.py): one linear probe per (space, task) on
the method's ``space/<name>`` outputs of the training items; a space that holds a label scores
it, a space of noise does not, items labelled -1 are left out, no space is an error."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from callbacks.evaluators import EVALUATORS
from callbacks.spaces import SpaceProbe


class Spaces:
    """A stand-in method: ``space/signal`` = one-hot of the item's class, ``space/noise`` =
    random; ``item`` indexes a fixed table of classes."""

    device = torch.device("cpu")
    training = False
    method_cfg = type("Cfg", (), {"name": "stub"})

    def __init__(self, classes: torch.Tensor, spaces: bool = True) -> None:
        self.classes, self.spaces = classes, spaces
        self.draw = 0  # noise seed offset: fresh noise for the queries

    def eval(self) -> None: ...

    def train(self, mode: bool = True) -> None: ...

    def encode(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {}

    def eval_outputs(self, batch: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
        if not self.spaces:
            return {"logits/x": torch.zeros(len(batch["index"]), 2)}
        ids = batch["index"]
        noise = torch.randn(
            len(ids), 6, generator=torch.Generator().manual_seed(self.draw + int(ids[0]))
        )
        return {
            "space/signal": torch.eye(4)[self.classes[ids].clamp(min=0)],
            "space/noise": noise,
        }


class Data:
    labels = {"kind": 4}

    def __init__(self, classes: torch.Tensor) -> None:
        self.classes = classes

    def batch(self, ids: torch.Tensor) -> dict[str, Any]:
        return {"index": ids, "item_id": ids, "label/kind": self.classes[ids]}

    def probe_loader(self, split: str) -> list[dict[str, Any]]:
        ids = torch.arange(len(self.classes))
        return [self.batch(chunk) for chunk in ids.split(50)]


def test_scores_each_space_and_ignores_unlabelled_items():
    assert EVALUATORS["space_probe"] is SpaceProbe
    classes = torch.arange(200) % 4
    classes[::5] = -1  # unknown: the -1 rows never reach the probe
    module, data = Spaces(classes), Data(classes)
    probe = SpaceProbe(module, data, {"steps": 50})
    module.draw = 10_000
    for batch in data.probe_loader("test"):
        out = {
            "outputs": module.eval_outputs(batch, {}),
            "labels": {"kind": batch["label/kind"]},
            "index": batch["index"],
        }
        probe.update(out, batch)
    values = probe.compute()
    assert set(values) == {
        "space_probe/signal/kind/accuracy",
        "space_probe/noise/kind/accuracy",
    }
    assert values["space_probe/signal/kind/accuracy"].item() == 100.0
    # 6 noise dimensions cannot separate 160 fresh items of 4 classes: near chance (25 %)
    assert values["space_probe/noise/kind/accuracy"].item() < 60.0
    assert probe.metrics["signal", "kind"].update_count
    assert len(torch.cat(probe.metrics["signal", "kind"].labels)) == 160


def test_a_method_without_spaces_is_an_error():
    classes = torch.arange(8) % 4
    with pytest.raises(ValueError, match="exposes no space/<name> output"):
        SpaceProbe(Spaces(classes, spaces=False), Data(classes), {})
