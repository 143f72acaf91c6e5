"""DebCSE (modules/debcse.py): pairs mined before training from the scorer's neighbours and word
overlap, drawn per sample and step by inverse propensity, encoded as the positive and hard
negative views of SimCSE's supervised loss. The sampler's own tests are in
tests/test_debcse_sampling.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modules.base import FitContext
from modules.debcse import DebCSE
from modules.debcse_sampling import draw_inverse_propensity
from modules.losses.simcse import simcse_loss
from modules.simcse import SimCSE
from modules.towers.tokenizer import WordTokenizer
from tests.test_whitened_cse import MODEL, OPTIM, SENTENCES, WORDS

VOCAB = ["<pad>", "<unk>", "<cls>", *WORDS]


def module(cls: type = DebCSE, **method: Any) -> DebCSE:
    torch.manual_seed(0)
    name = "debcse" if cls is DebCSE else "simcse"
    return cls(
        method={
            "name": name,
            **({"num_candidates": 2, "num_bins": 2} if cls is DebCSE else {}),
            **method,
        },
        model=MODEL,
        optim=OPTIM,
        tokenizer=WordTokenizer(VOCAB, max_len=12).state(),
        context={"modalities": ["text"], "views": {"text": 2}, "max_text_len": 12},
    ).double()


def batch(rows: list[int] | None = None) -> dict[str, torch.Tensor]:
    rows = list(range(len(SENTENCES))) if rows is None else rows
    ids, mask = WordTokenizer(VOCAB, max_len=12).encode([SENTENCES[i] for i in rows])
    return {
        "text@0_ids": ids,
        "text@0_mask": mask,
        "text@1_ids": ids,
        "text@1_mask": mask,
        "index": torch.tensor(rows),
        "item_id": torch.tensor(rows) // 2,  # meanings: pairs of sentences
    }


def context(earlier: list | None = None) -> FitContext:
    """The training set in order, in batches of 3 (padded to different lengths)."""
    return FitContext(
        earlier=earlier or [],
        num_items=len(SENTENCES),
        loader=lambda indices: [batch(list(range(s, min(s + 3, 8)))) for s in range(0, 8, 3)],
        group_batches=lambda groups: None,
    )


def test_prepare_fit_mines_scorer_neighbours_and_overlapping_negatives() -> None:
    m = module()
    ctx = context()
    m.prepare_fit(ctx)
    mined = m.mined
    assert mined.positives.shape == mined.negatives.shape == (8, 2)
    m.eval()
    with torch.no_grad():
        emb = F.normalize(m.encode(batch())["text@0"].pooled, dim=1)
    for i in range(8):
        others = sorted((j for j in range(8) if j != i), key=lambda j: -float(emb[i] @ emb[j]))
        assert set(mined.positives[i].tolist()) == set(others[:2])
        assert i not in mined.negatives[i].tolist()
        assert not set(mined.negatives[i].tolist()) & set(others[:2])
    # the stored tokens are the training sentences, padded to one length
    ids, mask = WordTokenizer(VOCAB, max_len=12).encode(SENTENCES)
    torch.testing.assert_close(mined.ids[:, : ids.shape[1]], ids)
    assert mined.ids.shape[1] == ids.shape[1] and torch.equal(mined.mask, mask)
    assert set(ctx.metrics) == {
        "debcse/positive_candidates_same_meaning",
        "debcse/negative_candidates_same_meaning",
    }


def test_an_earlier_stage_is_the_scorer() -> None:
    scorer = module(SimCSE)
    with torch.no_grad():
        for p in scorer.parameters():
            p.add_(torch.randn_like(p))
    m = module()
    m.prepare_fit(context([scorer]))
    scorer.eval()
    with torch.no_grad():
        emb = F.normalize(scorer.encode(batch())["text@0"].pooled, dim=1)
    nearest = (emb @ emb.T).fill_diagonal_(-2).argmax(1)
    assert all(int(nearest[i]) in m.mined.positives[i].tolist() for i in range(8))
    own = module()
    own.prepare_fit(context())
    assert not torch.equal(own.mined.positives.sort(1).values, m.mined.positives.sort(1).values)


def test_training_views_are_the_drawn_pool_sentences_and_the_loss_is_supervised_simcse() -> None:
    m = module()
    m.prepare_fit(context())
    m.eval()  # no dropout: outputs are functions of the tokens only
    with torch.no_grad():
        outputs = m.encode(batch())
        pool = {"text_ids": m.mined.ids, "text_mask": m.mined.mask}
        all_pooled = m.towers["text"](pool).pooled
    assert sorted(outputs) == ["text@0", "text@1", "text@2"]
    index = torch.arange(8)
    for v, (cands, e) in enumerate(
        (
            (m.mined.positives, m.mined.positive_propensity),
            (m.mined.negatives, m.mined.negative_propensity),
        ),
        start=1,
    ):
        rows = draw_inverse_propensity(cands, e, index, 0, torch.initial_seed(), v)
        assert all(int(r) in cands[i].tolist() for i, r in enumerate(rows))
        torch.testing.assert_close(outputs[f"text@{v}"].pooled, all_pooled[rows])
    z = [F.normalize(m.mlp(outputs[f"text@{v}"].pooled), dim=1) for v in range(3)]
    torch.testing.assert_close(
        m.losses(batch(), outputs)["debcse"], simcse_loss(z[0], z[1], 20.0, z[2])
    )


def test_draws_do_not_depend_on_how_the_batch_is_split() -> None:
    m = module()
    m.prepare_fit(context())
    m.eval()
    with torch.no_grad():
        whole = m.encode(batch())
        halves = [m.encode(batch(list(range(s, s + 4)))) for s in (0, 4)]
    for v in (1, 2):
        torch.testing.assert_close(
            whole[f"text@{v}"].pooled, torch.cat([h[f"text@{v}"].pooled for h in halves])
        )


def test_without_mined_pairs_the_loss_is_unsupervised_simcse() -> None:
    deb, sim = module(), module(SimCSE)
    sim.load_state_dict(deb.state_dict())
    deb.eval(), sim.eval()
    with torch.no_grad():
        a = deb.losses(batch(), deb.encode(batch()))["debcse"]
        b = sim.losses(batch(), sim.encode(batch()))["simcse"]
    torch.testing.assert_close(a, b)


def test_evaluation_batches_are_encoded_as_the_base_does() -> None:
    m = module()
    m.prepare_fit(context())
    ids, mask = batch()["text@0_ids"], batch()["text@0_mask"]
    m.eval()
    with torch.no_grad():
        out = m.encode({"text_ids": ids, "text_mask": mask, "text@1_ids": ids, "text@1_mask": mask})
    assert sorted(out) == ["text", "text@1"]


def test_positives_drawn_over_many_steps_follow_inverse_propensity() -> None:
    m = module(num_candidates=3, num_bins=2)
    m.prepare_fit(context())
    cands, e = m.mined.positives, m.mined.positive_propensity
    counts = np.zeros(3)
    for step in range(600):
        row = int(draw_inverse_propensity(cands, e, torch.tensor([0]), step, 0, 1))
        counts[cands[0].tolist().index(row)] += 1
    expected = (1 / e[0]).numpy() / (1 / e[0]).sum().item() * 600
    assert np.abs(counts - expected).max() < 5 * np.sqrt(expected.max())


def test_a_scorer_with_other_token_ids_is_refused() -> None:
    torch.manual_seed(0)
    scorer = SimCSE(
        method={"name": "simcse"},
        model=MODEL,
        optim=OPTIM,
        tokenizer=WordTokenizer([*VOCAB, "extra"], max_len=12).state(),
        context={"modalities": ["text"], "views": {"text": 2}, "max_text_len": 12},
    )
    with pytest.raises(ValueError, match="other token ids"):
        module().prepare_fit(context([scorer]))


@pytest.mark.parametrize(
    ("method", "message"),
    [({"num_candidates": 0}, "num_candidates must be positive"), ({"num_bins": 0}, "num_bins")],
)
def test_bad_settings_are_refused(method: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        module(**method)
