"""WhitenedCSE (modules/whitened_cse.py): K dropout views of each sentence, each whitened with
its own shuffled groups, through SimCSE's MLP, contrasted view 1 against the others; the loss
against a slow recomputation from the tower outputs, the views and permutations, evaluation
before the head, and the config checks. The loss functions' own tests are in
tests/test_losses_whitened_cse.py."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from modules.towers.tokenizer import WordTokenizer
from modules.whitened_cse import WhitenedCSE
from tests.test_losses_whitened_cse import slow_multi_positive, slow_sgw

WORDS = "the chef cook chopped cut onion fresh red pilot lost ticket map old in morning".split()
SENTENCES = [
    "the chef chopped the onion",
    "the cook cut the fresh onion",
    "the pilot lost the ticket",
    "the pilot lost the old map",
    "the chef cut the red onion in the morning",
    "the cook chopped the old onion",
    "the pilot lost the map in the morning",
    "the cook lost the fresh ticket",
]
MODEL = {
    "embed_dim": 8,
    "text": {"name": "transformer", "width": 16, "depth": 1, "heads": 2, "dropout": 0.1},
    "temperature": 0.05,
    "learnable_temperature": False,
    "max_logit_scale": 100.0,
}
OPTIM = {
    "lr": 1e-2,
    "weight_decay": 0.0,
    "betas": [0.9, 0.98],
    "eps": 1e-6,
    "warmup_steps": 0,
    "min_lr_ratio": 0.0,
}


def module(views: int = 2, **method: Any) -> WhitenedCSE:
    torch.manual_seed(0)
    tokenizer = WordTokenizer(["<pad>", "<unk>", "<cls>", *WORDS], max_len=12)
    return WhitenedCSE(
        method={"name": "whitened_cse", "group_size": 4, **method},
        model=MODEL,
        optim=OPTIM,
        tokenizer=tokenizer.state(),
        context={"modalities": ["text"], "views": {"text": views}, "max_text_len": 12},
    ).double()


def batch() -> dict[str, torch.Tensor]:
    ids, mask = WordTokenizer(["<pad>", "<unk>", "<cls>", *WORDS], max_len=12).encode(SENTENCES)
    return {
        "text@0_ids": ids,
        "text@0_mask": mask,
        "text@1_ids": ids,
        "text@1_mask": mask,
        "index": torch.arange(len(SENTENCES)),
        "item_id": torch.arange(len(SENTENCES)),
    }


def test_three_dropout_views_of_one_sentence_are_encoded() -> None:
    m = module().train()
    outputs = m.encode(batch())
    assert sorted(outputs) == ["text@0", "text@1", "text@2"]
    pooled = [outputs[f"text@{v}"].pooled for v in range(3)]
    assert (pooled[0] - pooled[2]).abs().max() > 1e-6  # another dropout mask
    m.eval()
    with torch.no_grad():
        still = m.encode(batch())
    torch.testing.assert_close(still["text@0"].pooled, still["text@2"].pooled)


def test_loss_equals_the_slow_recomputation_from_the_tower_outputs() -> None:
    m = module().train()
    outputs = m.encode(batch())
    got = m.losses(batch(), outputs)["whitened_cse"]
    views = []
    for v in range(3):
        order = m.permutation(v, 8).tolist()
        groups = [order[:4], order[4:]]
        white = slow_sgw(outputs[f"text@{v}"].pooled, groups, eps=1e-5)
        views.append(F.normalize(m.mlp(white), dim=1))
    torch.testing.assert_close(got, slow_multi_positive(views, 20.0))


def test_permutations_differ_by_view_and_step_and_repeat_with_the_seed() -> None:
    m = module()
    torch.manual_seed(3)
    first = [m.permutation(v, 8) for v in range(3)]
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])
    torch.manual_seed(3)
    assert all(torch.equal(p, m.permutation(v, 8)) for v, p in enumerate(first))
    assert sorted(first[0].tolist()) == list(range(8))
    assert torch.equal(module(shuffle=False).permutation(1, 8), torch.arange(8))


def test_two_views_are_simcse_on_whitened_features() -> None:
    m = module(num_views=2, shuffle=False).train()
    outputs = m.encode(batch())
    assert sorted(outputs) == ["text@0", "text@1"]
    z = [
        F.normalize(
            m.mlp(slow_sgw(outputs[f"text@{v}"].pooled, [[0, 1, 2, 3], [4, 5, 6, 7]], 1e-5)), dim=1
        )
        for v in range(2)
    ]
    simcse = F.cross_entropy(20.0 * z[0] @ z[1].T, torch.arange(len(SENTENCES)))
    torch.testing.assert_close(m.losses(batch(), outputs)["whitened_cse"], simcse)


def test_evaluation_reads_the_sentence_vector_before_the_head() -> None:
    m = module().eval()
    ids, mask = batch()["text@0_ids"], batch()["text@0_mask"]
    with torch.no_grad():
        out = m.encode({"text_ids": ids, "text_mask": mask, "text@1_ids": ids, "text@1_mask": mask})
    assert "text@2" not in out  # no extra passes outside training views
    torch.testing.assert_close(m.embedding("text", out["text"]), out["text"].pooled)


def test_training_lowers_the_loss_through_the_whitening() -> None:
    m = module().train()
    optimizer = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = m.losses(batch(), m.encode(batch()))["whitened_cse"]
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"group_size": 3}, "group_size 3 must divide model.embed_dim 8"),
        ({"num_views": 1}, "num_views must be at least 2"),
        ({"eps": -1.0}, "eps must be non-negative"),
        ({"mlp_only_train": False}, "mlp_only_train"),
        ({"views": 3}, "two views of one sentence"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        module(**kwargs)
