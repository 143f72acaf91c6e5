"""DefSent+ (modules/defsent.py): the entry table built before training from the encoder's own
definition embeddings (averaged per entry by hand here, then the isotropic transform), its
covariance, the loss over that frozen table, and a short training run that lowers it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from experiments.config import load_experiment
from experiments.stages import build, fit_context
from modules.losses.defsent import isotropic_entries

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
TINY = ["data.num_train=24", "data.num_val=8", "data.num_test=8", "data.batch_size=16"]


def built(*overrides: str):
    stages = load_experiment(EXPERIMENTS / "defsent.yaml", [*TINY, *overrides])
    torch.manual_seed(0)
    datamodule, module = build(stages[0].plain)
    return datamodule, module


def by_hand(datamodule, module) -> torch.Tensor:
    """Each entry's average definition embedding, one definition at a time."""
    dataset = datamodule.datasets["train"]
    sums: dict[int, list[torch.Tensor]] = {}
    module.eval()
    with torch.no_grad():
        for i in range(len(dataset)):
            sample = dataset[i]
            ids, mask = module.tokenizer.encode([sample["text"]])
            out = module.towers["text"]({"text_ids": ids, "text_mask": mask})
            sums.setdefault(sample["label/entry"], []).append(out.pooled[0].double())
    module.train()
    return torch.stack([torch.stack(sums[k]).mean(0) for k in range(len(sums))])


@pytest.mark.parametrize("space", ["raw", "ica"])
def test_prepare_fit_builds_the_entry_table_from_the_encoder(space):
    datamodule, module = built(f"method.entry_space={space}")
    ctx = fit_context(datamodule, [])
    module.prepare_fit(ctx)
    averaged = by_hand(datamodule, module)
    if space == "raw":
        torch.testing.assert_close(module.entries.double(), averaged, atol=1e-5, rtol=1e-5)
    else:  # 24 entries span 23 dimensions: isotropic there, 0 elsewhere
        table = module.entries.double() / 100.0
        centred = table - table.mean(0)
        cov = centred.T @ centred / table.shape[0]
        torch.testing.assert_close(cov.diagonal()[:23], torch.ones(23, dtype=torch.float64))
        assert table[:, 23:].abs().max() == 0
        torch.manual_seed(0)  # the same whitening (the ICA rotation aside) from the hand averages
        white = isotropic_entries(averaged, "whitened", 1.0)
        gram = table[:, :23] @ table[:, :23].T  # rotations keep the entries' Gram matrix
        torch.testing.assert_close(gram, white @ white.T, atol=1e-4, rtol=1e-4)
    assert set(ctx.metrics) == {"defsent/entry_mean_cosine_averaged", "defsent/entry_mean_cosine"}


def test_loss_is_cross_entropy_over_the_frozen_table_and_training_lowers_it():
    datamodule, module = built("method.entry_space=whitened", "method.entry_scale=1.0")
    module.prepare_fit(fit_context(datamodule, []))
    batch = next(iter(datamodule.train_dataloader()))
    outputs = module.encode(batch)
    pooled = module.pooler(module.embedding("text", outputs["text"]))
    want = F.cross_entropy(pooled @ module.entries.T, batch["label/entry"])
    torch.testing.assert_close(module.losses(batch, outputs)["entry"], want)
    table = module.entries.clone()
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3)
    first = None
    for _ in range(6):
        loss = module.losses(batch, module.encode(batch))["entry"]
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first
    torch.testing.assert_close(module.entries, table)  # frozen


def test_needs_the_entry_label():
    with pytest.raises(ValueError, match="method.label"):
        built("method.label=sense")
