"""ALPRO's losses (modules/losses/alpro.py) against slow references and the paper's rules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modules.losses.alpro import (
    entity_prompt_features,
    entity_pseudo_labels,
    masked_token_mean,
    pem_loss,
    sample_hard_negatives,
    vtm_loss,
)


def generators(n: int, offset: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(offset + i) for i in range(n)]


def test_hard_negatives_never_pick_a_positive_and_follow_the_softmax() -> None:
    sim = torch.tensor([[3.0, 1.0, 0.0, 2.0]]).repeat(4000, 1)
    positives = torch.zeros(4000, 4, dtype=torch.bool)
    positives[:, 0] = True  # the most similar column is the row's own caption
    picked = sample_hard_negatives(sim, positives, generators(4000))
    assert (picked != 0).all()
    expected = torch.tensor([1.0, 0.0, 2.0]).softmax(0)  # columns 1, 2, 3
    frequency = torch.bincount(picked, minlength=4)[1:].double() / 4000
    torch.testing.assert_close(frequency, expected.double(), atol=0.03, rtol=0)


def test_hard_negatives_depend_only_on_the_row_and_its_generator() -> None:
    torch.manual_seed(0)
    sim, positives = torch.randn(6, 6), torch.eye(6, dtype=torch.bool)
    whole = sample_hard_negatives(sim, positives, generators(6))
    halves = torch.cat(
        [
            sample_hard_negatives(sim[:3], positives[:3], generators(3)),
            sample_hard_negatives(sim[3:], positives[3:], generators(3, offset=3)),
        ]
    )
    assert torch.equal(whole, halves)


def test_hard_negatives_of_an_all_positive_row_are_uniform() -> None:
    picked = sample_hard_negatives(
        torch.zeros(3000, 3), torch.ones(3000, 3, dtype=torch.bool), generators(3000)
    )
    assert set(picked.tolist()) == {0, 1, 2}


def test_vtm_loss_is_the_mean_two_way_cross_entropy() -> None:
    torch.manual_seed(1)
    pos, neg = torch.randn(3, 2, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    terms = [-(p[1] - torch.logsumexp(p, 0)) for p in pos]
    terms += [-(n[0] - torch.logsumexp(n, 0)) for n in neg]
    torch.testing.assert_close(vtm_loss(pos, neg), sum(terms) / 9)


def test_masked_token_mean_is_zero_with_a_graph_when_nothing_is_selected() -> None:
    values = torch.randn(2, 3, requires_grad=True)
    out = masked_token_mean(values, torch.zeros(2, 3, dtype=torch.bool))
    out.backward()
    assert out.item() == 0.0 and torch.equal(values.grad, torch.zeros(2, 3))


def test_entity_prompt_features_average_each_entitys_templates() -> None:
    torch.manual_seed(2)
    prompts = F.normalize(torch.randn(3 * 4, 5, dtype=torch.float64), dim=-1)
    got = entity_prompt_features(prompts, num_templates=4)
    for k in range(3):
        mean = sum(prompts[4 * k + m] for m in range(4)) / 4
        torch.testing.assert_close(got[k], mean / mean.norm())
    with pytest.raises(ValueError, match="multiple"):
        entity_prompt_features(prompts, num_templates=5)


def test_pseudo_labels_sum_to_one_and_carry_no_gradient() -> None:
    crops = F.normalize(torch.randn(4, 6), dim=-1).requires_grad_()
    entities = F.normalize(torch.randn(7, 6), dim=-1).requires_grad_()
    q, _ = entity_pseudo_labels(crops, entities, 1 / 0.07, 0.2)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(4))
    assert not q.requires_grad


def test_confidence_is_the_max_probability_not_the_argmax_index() -> None:
    """A near-uniform row whose argmax is entity 5 (max probability ~0.1) is ignored and a
    peaked row at entity 0 is kept: comparing the argmax index with 0.2 (the released code's
    slip) would decide both the other way."""
    entities = torch.eye(10)
    flat = F.normalize(torch.ones(1, 10) + 0.05 * F.one_hot(torch.tensor([5]), 10), dim=-1)
    peaked = F.one_hot(torch.tensor([0]), 10).float()
    q, confident = entity_pseudo_labels(torch.cat([flat, peaked]), entities, 10.0, 0.2)
    assert q[0].argmax() == 5 and q[0].max() < 0.2 and q[1].max() > 0.2
    assert confident.tolist() == [False, True]


def test_pem_loss_ignores_unconfident_rows_entirely() -> None:
    logits = torch.randn(4, 5, requires_grad=True)
    targets = torch.softmax(torch.randn(4, 5), dim=1)
    confident = torch.tensor([True, False, True, False])
    loss = pem_loss(logits, targets, confident)
    kept = [-(targets[i] * logits[i].log_softmax(0)).sum() for i in (0, 2)]
    torch.testing.assert_close(loss, sum(kept) / 2)
    loss.backward()
    assert torch.equal(logits.grad[[1, 3]], torch.zeros(2, 5))
    assert logits.grad[[0, 2]].abs().sum() > 0
