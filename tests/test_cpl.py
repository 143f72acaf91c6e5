"""CPL (modules/cpl.py) on tiny built-in data: part features from the tower's spatial map, the
four terms, labels of unlabelled items never read, the open_world outputs, config checks. The
losses themselves: tests/test_losses_cpl.py and tests/conformance/cases_cpl.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from experiments.config import load_experiment
from experiments.stages import build
from modules.cpl import CPLConfig, part_features

YAML = Path(__file__).resolve().parents[1] / "experiments" / "cpl.yaml"
TINY = [
    "data.num_train=32",
    "data.num_val=8",
    "data.num_test=8",
    "data.image_size=24",
    "data.batch_size=16",
]


@pytest.fixture(scope="module")
def built():
    torch.manual_seed(0)
    datamodule, module = build(load_experiment(YAML, TINY)[-1].plain)
    datamodule.setup("fit")
    return datamodule, module, next(iter(datamodule.train_dataloader()))


def test_part_features_are_region_means_of_the_token_map() -> None:
    tokens = torch.arange(2 * 16 * 3, dtype=torch.float64).reshape(2, 16, 3)
    parts = part_features(tokens, 2)  # 4 x 4 map -> 2 x 2 regions of 2 x 2 positions
    assert parts.shape == (2, 3, 4)
    grid = tokens.reshape(2, 4, 4, 3)
    torch.testing.assert_close(parts[:, :, 0], grid[:, :2, :2].mean(dim=(1, 2)))
    torch.testing.assert_close(parts[:, :, 3], grid[:, 2:, 2:].mean(dim=(1, 2)))
    with pytest.raises(ValueError, match="square"):
        part_features(torch.zeros(1, 6, 3), 2)


def test_terms_are_finite_and_unlabelled_labels_are_not_read(built) -> None:
    _, module, batch = built
    module.eval()  # no dropout
    torch.manual_seed(1)
    terms = module.losses(batch, module.encode(batch))
    assert set(terms) == {"mce", "glv", "csp", "neg_entropy"}
    assert all(torch.isfinite(v) for v in terms.values())
    assert -float(terms["neg_entropy"].detach()) <= torch.log(torch.tensor(6.0)) + 1e-6
    scrambled = dict(batch)
    scrambled["label/source"] = torch.where(
        batch["labelled"], batch["label/source"], (batch["label/source"] + 1) % 6
    )
    torch.manual_seed(1)
    again = module.losses(scrambled, module.encode(scrambled))
    for name, value in terms.items():
        torch.testing.assert_close(again[name], value, msg=name)
    module.train()


def test_eval_outputs_feed_open_world(built) -> None:
    _, module, batch = built
    out = module.eval_outputs(batch, module.encode(batch))
    assert out["logits/image/source"].shape == (16, 6)
    assert module.evaluators() == {"open_world": {"task": "source"}}


def test_config_checks_name_the_key() -> None:
    for key, value in (
        ("gumbel_tau", 0.0),
        ("parts", 0),
        ("dropout", 1.0),
        ("choose_k", 0),
        ("warm_start_steps", -1),
    ):
        with pytest.raises(ValueError, match=key):
            CPLConfig(**{key: value})


def test_warm_start_turns_the_pair_terms_off(built) -> None:
    _, module, batch = built
    module.method_cfg.warm_start_steps = 10  # global step 0 < 10: supervised warm start
    try:
        terms = module.losses(batch, module.encode(batch))
    finally:
        module.method_cfg.warm_start_steps = 0
    assert float(terms["glv"]) == 0.0 and float(terms["csp"]) == 0.0
    assert float(terms["mce"]) > 0.0
