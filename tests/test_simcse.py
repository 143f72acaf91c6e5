"""SimCSE's module (modules/simcse.py): which views its loss contrasts in which direction, and
which vector evaluation reads (before the MLP for unsupervised SimCSE, after it for NLI)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modules.losses.simcse import simcse_loss
from modules.simcse import SimCSE
from modules.towers.tokenizer import WordTokenizer
from tests.tiny_modules import MODEL, OPTIM, word_state

VOCAB = ["<pad>", "<unk>", "<cls>", *"the chef cook chopped cut onion fish washed a".split()]
#: One list of sentences per view (anchors, positives, hard negatives).
VIEWS = [
    ["the chef chopped the onion", "a cook cut the fish", "the chef washed a fish", "a onion"],
    ["the cook cut the onion", "a chef chopped a fish", "the cook washed the fish", "onion"],
    ["the chef washed the onion", "a cook cut a onion", "the chef chopped a fish", "a fish"],
]


def module(views: int, **method) -> SimCSE:
    torch.manual_seed(0)
    return SimCSE(
        method={"name": "simcse", **method},
        model={**MODEL, "temperature": 0.05, "learnable_temperature": False},
        optim=OPTIM,
        tokenizer=word_state(VOCAB),
        context={"modalities": ["text"], "views": {"text": views}, "max_text_len": 8},
    ).eval()


def batch(views: int) -> dict[str, torch.Tensor]:
    tokenizer = WordTokenizer(VOCAB, max_len=8)
    out = {}
    for v in range(views):
        out[f"text@{v}_ids"], out[f"text@{v}_mask"] = tokenizer.encode(VIEWS[v])
    return out


@pytest.mark.parametrize("views", [2, 3])
def test_loss_is_anchor_view_0_against_view_1(views):
    m = module(views)
    b = batch(views)
    outputs = m.encode(b)
    assert set(outputs) == {f"text@{v}" for v in range(views)}
    z = [F.normalize(m.mlp(outputs[f"text@{v}"].pooled), dim=-1) for v in range(views)]
    expected = simcse_loss(z[0], z[1], 20.0, z[2] if views == 3 else None)
    torch.testing.assert_close(m.losses(b, outputs)["simcse"], expected)
    swapped = simcse_loss(z[1], z[0], 20.0, z[2] if views == 3 else None)
    assert not torch.isclose(expected, swapped)


def test_evaluation_reads_the_vector_before_or_after_the_mlp():
    unsupervised, nli = module(2), module(3)
    assert unsupervised.mlp_only_train and not nli.mlp_only_train
    assert not module(2, mlp_only_train=False).mlp_only_train
    out = unsupervised.encode(batch(2))["text@0"]
    torch.testing.assert_close(unsupervised.embedding("text", out), out.pooled)
    torch.testing.assert_close(nli.embedding("text", out), nli.mlp(out.pooled))


def test_one_view_is_refused():
    with pytest.raises(ValueError, match="simcse needs 2 training views"):
        module(1)
