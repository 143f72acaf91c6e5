"""Decoding strategies (modules/decoding.py): contrastive search against a slow reference written
from the paper's Eq. 1 with loops, its limits (alpha = 0 and k = 1 are greedy, alpha = 1 picks
the least similar candidate, the choice is always in the top k), beam search against brute force,
the nucleus against hand examples."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from modules.decoding import (
    beam_search,
    contrastive_search,
    greedy_search,
    nucleus_filter,
    nucleus_sampling,
)

VOCAB, DIM = 7, 5


class ToyLM:
    """A causal toy model: the state at t is tanh of a position-weighted running sum of the
    token embeddings up to t; logits are a fixed linear map of it (float64)."""

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.embed = torch.randn(VOCAB, DIM, generator=g, dtype=torch.float64)
        self.out = torch.randn(DIM, VOCAB, generator=g, dtype=torch.float64) * 2
        self.calls = 0

    def __call__(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        weights = torch.arange(1, ids.shape[1] + 1, dtype=torch.float64).view(1, -1, 1)
        hidden = torch.tanh((self.embed[ids] * weights.sqrt()).cumsum(1) / weights)
        return hidden @ self.out, hidden


def prefixes(rows: int = 4, length: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (rows, length), generator=torch.Generator().manual_seed(seed))


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def reference_contrastive(model: ToyLM, prefix: list[int], steps: int, k: int, alpha: float):
    """Eq. 1 one sequence at a time: softmax probabilities, top k, each candidate appended and
    run through the model, max cosine to every context state by loops."""
    ids = list(prefix)
    for _ in range(steps):
        logits, hidden = model(torch.tensor([ids]))
        probs = torch.softmax(logits[0, -1], dim=-1).tolist()
        top = sorted(range(VOCAB), key=lambda v: -probs[v])[:k]
        context = hidden[0].tolist()
        best, best_score = None, -math.inf
        for v in top:
            _, cand = model(torch.tensor([ids + [v]]))
            h_v = cand[0, -1].tolist()
            penalty = max(cosine(h_v, h_j) for h_j in context)
            score = (1 - alpha) * probs[v] - alpha * penalty
            if score > best_score:
                best, best_score = v, score
        ids.append(best)
    return ids[len(prefix) :]


@pytest.mark.parametrize(("k", "alpha"), [(3, 0.6), (5, 0.4), (VOCAB, 0.9)])
def test_contrastive_search_matches_the_slow_reference(k, alpha):
    model, prefix = ToyLM(), prefixes()
    fast = contrastive_search(model, prefix, steps=6, k=k, alpha=alpha)
    slow = [reference_contrastive(model, row, 6, k, alpha) for row in prefix.tolist()]
    assert fast.tolist() == slow


@pytest.mark.parametrize(("k", "alpha"), [(4, 0.0), (1, 0.6), (1, 1.0)])
def test_contrastive_search_with_alpha_0_or_k_1_is_greedy(k, alpha):
    model, prefix = ToyLM(seed=2), prefixes(6)
    expected = greedy_search(model, prefix, 8)
    assert torch.equal(contrastive_search(model, prefix, 8, k=k, alpha=alpha), expected)


def test_alpha_1_takes_the_top_k_candidate_least_similar_to_the_context():
    model, prefix = ToyLM(seed=3), prefixes(5)
    chosen = contrastive_search(model, prefix, steps=1, k=3, alpha=1.0)[:, 0]
    logits, hidden = model(prefix)
    top = logits[:, -1].topk(3).indices
    for row in range(len(prefix)):
        penalties = []
        for v in top[row].tolist():
            _, cand = model(torch.cat([prefix[row], torch.tensor([v])]).unsqueeze(0))
            penalties.append(max(cosine(cand[0, -1].tolist(), h) for h in hidden[row].tolist()))
        assert chosen[row].item() == top[row, penalties.index(min(penalties))].item()


def test_every_contrastive_choice_is_among_the_top_k():
    model, prefix = ToyLM(seed=4), prefixes(6)
    out = contrastive_search(model, prefix, steps=6, k=2, alpha=0.8)
    ids = torch.cat([prefix, out], dim=1)
    logits, _ = model(ids)
    for t in range(prefix.shape[1], ids.shape[1]):
        top = logits[:, t - 1].topk(2).indices
        assert (top == ids[:, t : t + 1]).any(dim=1).all()


def test_a_large_enough_beam_finds_the_most_probable_continuation():
    model, prefix, steps = ToyLM(seed=5), prefixes(3), 3
    found = beam_search(model, prefix, steps, beam_width=VOCAB**2)
    for row in range(len(prefix)):
        best, best_logp = None, -math.inf
        for tail in itertools.product(range(VOCAB), repeat=steps):
            ids = torch.cat([prefix[row], torch.tensor(tail)]).unsqueeze(0)
            logp = torch.log_softmax(model(ids)[0][0], dim=-1)
            total = sum(logp[prefix.shape[1] - 1 + i, v].item() for i, v in enumerate(tail))
            if total > best_logp:
                best, best_logp = list(tail), total
        assert found[row].tolist() == best


def test_beam_width_1_is_greedy():
    model, prefix = ToyLM(seed=6), prefixes(4)
    assert torch.equal(beam_search(model, prefix, 5, beam_width=1), greedy_search(model, prefix, 5))


def test_the_nucleus_is_the_smallest_set_reaching_p():
    logits = torch.tensor([[0.5, 0.05, 0.3, 0.15]]).log()
    kept = lambda p: torch.isfinite(nucleus_filter(logits, p))[0].tolist()  # noqa: E731
    assert kept(0.5) == [True, False, False, False]
    assert kept(0.8) == [True, False, True, False]
    assert kept(0.81) == [True, False, True, True]
    assert kept(1.0) == [True, True, True, True]


def test_nucleus_sampling_is_reproducible_and_greedy_with_a_tiny_nucleus():
    model, prefix = ToyLM(seed=7), prefixes(5)
    draw = lambda s: nucleus_sampling(  # noqa: E731
        model, prefix, 6, 0.95, torch.Generator().manual_seed(s)
    )
    assert torch.equal(draw(0), draw(0)) and not torch.equal(draw(0), draw(1))
    tiny = nucleus_sampling(model, prefix, 6, 1e-6, torch.Generator().manual_seed(0))
    assert torch.equal(tiny, greedy_search(model, prefix, 6))


def test_bad_arguments_are_one_line_errors():
    model, prefix = ToyLM(), prefixes()
    with pytest.raises(ValueError, match="alpha"):
        contrastive_search(model, prefix, 2, alpha=1.5)
    with pytest.raises(ValueError, match="top_p"):
        nucleus_filter(torch.zeros(1, 3), 0.0)
    with pytest.raises(ValueError, match="prefix"):
        greedy_search(model, prefix[0], 2)
