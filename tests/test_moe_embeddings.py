"""CL + MoE: experts copied from the feed-forward blocks (same function at the start, one
domain's batch moves only its expert), the MNR loss against a loop and its closed form, the
method (routing by label, baseline without experts, checkpoint round trip) and the per-domain
retrieval metric against a brute-force count."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from callbacks.domain_retrieval import DomainRetrieval, DomainRetrievalR1
from callbacks.evaluators import EVALUATORS
from modules.base import module_from_checkpoint
from modules.losses.simcse import simcse_loss
from modules.moe_embeddings import (
    MoEEmbeddings,
    RoutedLinear,
    copy_ffn_into_experts,
    routed,
)
from modules.towers import TowerContext
from modules.towers.text import TextTransformerConfig, TextTransformerTower
from modules.towers.tokenizer import WordTokenizer
from tests.tiny_modules import MODEL, OPTIM, word_state

SENTENCES = ["the chef chopped the onion", "a player kicked the ball", "the chemist mixed it"]
VOCAB = WordTokenizer.build(SENTENCES).vocab


def tower(seed: int = 0) -> TextTransformerTower:
    torch.manual_seed(seed)
    cfg = TextTransformerConfig(width=16, depth=2, heads=2)
    return TextTransformerTower(cfg, 8, TowerContext(vocab_size=len(VOCAB) + 4, max_text_len=8))


def tokens(texts: list[str]) -> dict[str, torch.Tensor]:
    ids, mask = WordTokenizer(VOCAB, max_len=8).encode(texts)
    return {"text_ids": ids, "text_mask": mask}


BATCH = tokens(SENTENCES * 2)


@pytest.mark.parametrize("train", [True, False])
def test_copied_experts_compute_the_original_tower(train: bool) -> None:
    """Every expert starts as the block it copies, in training and in eval mode (where the
    fused fast path of the torch layer would skip the experts)."""
    original, moe = tower().train(train), tower().train(train)
    layers = copy_ffn_into_experts(moe, 3)
    assert len(layers) == 4  # two linear maps in each of two layers
    with torch.no_grad():
        expected = original(BATCH).pooled
        with routed(layers, torch.tensor([0, 1, 2, 2, 1, 0])):
            torch.testing.assert_close(moe(BATCH).pooled, expected)


def test_an_expert_changes_only_its_domains_samples() -> None:
    moe = tower().eval()
    layers = copy_ffn_into_experts(moe, 2)
    route = torch.tensor([0, 1, 0, 1, 0, 1])
    with torch.no_grad(), routed(layers, route):
        before = moe(BATCH).pooled
        layers[1].weight[1] += torch.randn_like(layers[1].weight[1])  # a down-projection
        after = moe(BATCH).pooled
    same = (after - before).abs().amax(dim=1) < 1e-6
    assert same.tolist() == (route == 0).tolist()


def test_a_domains_batch_gives_other_experts_zero_gradient() -> None:
    """Forced routing: expert d's parameters get an exact zero gradient (not None: DDP sees
    them used) from a batch of domain d' != d, and a non-zero one from their own domain."""
    moe = tower()
    layers = copy_ffn_into_experts(moe, 3)
    with routed(layers, torch.full((6,), 1)):
        moe(BATCH).pooled.square().sum().backward()
    for layer in layers:
        assert layer.weight.grad is not None
        assert layer.weight.grad[[0, 2]].abs().max() == 0
        assert layer.bias.grad[[0, 2]].abs().max() == 0
        assert layer.weight.grad[1].abs().max() > 0


def test_routed_layer_without_a_route_merges_the_experts_and_checks_ids() -> None:
    layer = RoutedLinear(torch.nn.Linear(4, 3), 2)
    with torch.no_grad():
        layer.weight[1] += 1.0
    x = torch.randn(2, 4)
    with routed([layer], torch.tensor([0, 0])):
        first = layer(x)
    with routed([layer], torch.tensor([1, 1])):
        second = layer(x)
    torch.testing.assert_close(layer(x), (first + second) / 2)
    with pytest.raises(ValueError, match=r"route ids must be in \[0, 2\)"):
        with routed([layer], torch.tensor([0, 2])):
            pass
    assert layer.route is None


def test_copy_into_experts_of_a_bert_encoder() -> None:
    """The MiniLM tower's BERT layers: intermediate and output dense maps become experts, the
    encoder computes what it did (shown on a tiny random BERT, the MiniLM architecture)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    bert = transformers.BertModel(config, add_pooling_layer=False).eval()
    ids = torch.randint(1, 30, (4, 5))
    with torch.no_grad():
        expected = bert(input_ids=ids).last_hidden_state
        layers = copy_ffn_into_experts(bert, 2)
        assert len(layers) == 4
        assert all(layer.weight.shape[0] == 2 for layer in layers)
        with routed(layers, torch.tensor([1, 0, 1, 0])):
            torch.testing.assert_close(bert(input_ids=ids).last_hidden_state, expected)


def test_copy_into_experts_refuses_a_tower_without_blocks() -> None:
    with pytest.raises(ValueError, match="no feed-forward block"):
        copy_ffn_into_experts(torch.nn.Sequential(torch.nn.Linear(3, 3)), 2)


# ---------------------------------------------------------------- MNR


def mnr_reference(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """sentence-transformers' MNR written as loops: -log softmax_j(scale cos(a_i, b_j))_i."""
    total = 0.0
    for i in range(len(a)):
        scores = [scale * F.cosine_similarity(a[i], b[j], dim=0) for j in range(len(b))]
        total = total - (scores[i] - torch.logsumexp(torch.stack(scores), 0))
    return total / len(a)


def test_mnr_is_the_reused_one_way_infonce() -> None:
    """The method's MNR term is :func:`simcse_loss` without hard negatives: checked here against
    sentence-transformers' form written as loops."""
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(5, 7, generator=g, dtype=torch.float64), dim=-1)
    b = F.normalize(torch.randn(5, 7, generator=g, dtype=torch.float64), dim=-1)
    torch.testing.assert_close(simcse_loss(a, b, 20.0), mnr_reference(a, b, 20.0))
    assert not torch.allclose(simcse_loss(a, b, 20.0), simcse_loss(b, a, 20.0))
    a.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: simcse_loss(x, b, 3.0), (a,))


def test_mnr_on_orthonormal_matched_pairs() -> None:
    """The spec's check: log(1 + (B - 1) e^-20) with scale 20 and a_i = b_i orthonormal."""
    e = torch.eye(6, dtype=torch.float64)
    expected = math.log(1 + 5 * math.exp(-20))
    assert simcse_loss(e, e, 20.0).item() == pytest.approx(expected, rel=1e-9)


# ---------------------------------------------------------------- the method


def method(**cfg) -> MoEEmbeddings:
    torch.manual_seed(0)
    return MoEEmbeddings(
        method={"name": "moe_embeddings", **cfg},
        model={**MODEL, "temperature": 0.05, "learnable_temperature": False},
        optim=OPTIM,
        tokenizer=word_state(VOCAB),
        context={
            "modalities": ["text"],
            "views": {"text": 2},
            "labels": {"domain": 3},
            "max_text_len": 8,
        },
    )


def training_batch() -> dict[str, torch.Tensor]:
    first, second = tokens(SENTENCES * 2), tokens(SENTENCES[::-1] * 2)
    return {
        "text@0_ids": first["text_ids"],
        "text@0_mask": first["text_mask"],
        "text@1_ids": second["text_ids"],
        "text@1_mask": second["text_mask"],
        "label/domain": torch.tensor([0, 1, 2, 0, 1, 2]),
        "index": torch.arange(6),
        "item_id": torch.arange(6),
    }


def test_method_routes_by_domain_and_the_baseline_has_no_experts() -> None:
    moe, shared = method(), method(experts=False)
    assert len(moe.routed_layers) == 2 * MODEL["text"]["depth"]
    assert moe.routed_layers[0].n_experts == 3
    assert not shared.routed_layers
    assert not any(isinstance(m, RoutedLinear) for m in shared.modules())
    batch = training_batch()
    loss = moe.total_loss(moe.losses(batch, moe.encode(batch)))
    loss.backward()
    assert all(layer.weight.grad.abs().amax(dim=(1, 2)).min() > 0 for layer in moe.routed_layers)
    # same initial weights: before any step the experts compute the shared encoder
    torch.testing.assert_close(loss, shared.total_loss(shared.losses(batch, shared.encode(batch))))
    assert moe.evaluators() == {"domain_retrieval": {"label": "domain"}}


def test_method_checkpoint_round_trip_keeps_the_experts() -> None:
    moe = method()
    with torch.no_grad():
        moe.routed_layers[0].weight[2] += torch.randn_like(moe.routed_layers[0].weight[2])
    state = {"hyper_parameters": dict(moe.hparams), "state_dict": moe.state_dict()}
    again = module_from_checkpoint(state)
    batch = training_batch()
    moe.eval()
    torch.testing.assert_close(
        again.encode(batch)["text@0"].pooled, moe.encode(batch)["text@0"].pooled
    )


def test_method_config_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="route_label: the data has no label 'topic'"):
        method(route_label="topic")
    with pytest.raises(KeyError, match="label/domain"):
        batch = training_batch()
        del batch["label/domain"]
        method().encode(batch)


# ---------------------------------------------------------------- per-domain retrieval


def brute_force_r1(first, second, domain, query) -> list[float]:
    out = []
    for d in sorted(set(domain.tolist())):
        hits, asked = 0, 0
        for i in range(len(first)):
            if domain[i] != d or not query[i]:
                continue
            asked += 1
            own = float(first[i] @ second[i])
            beaten = any(
                float(first[i] @ second[j]) >= own
                for j in range(len(first))
                if j != i and domain[j] == d
            )
            hits += not beaten
        out.append(100.0 * hits / asked if asked else float("nan"))
    return out


def test_domain_r1_matches_brute_force_and_ignores_other_domains_and_duplicates() -> None:
    g = torch.Generator().manual_seed(1)
    first = F.normalize(torch.randn(40, 4, generator=g), dim=-1)
    second = F.normalize(first + 0.6 * torch.randn(40, 4, generator=g), dim=-1)
    domain = torch.randint(0, 3, (40,), generator=g)
    query = torch.rand(40, generator=g) < 0.5
    metric = DomainRetrievalR1(3)
    metric.update(first[:25], second[:25], domain[:25], query[:25], torch.arange(25))
    metric.update(first[20:], second[20:], domain[20:], query[20:], torch.arange(20, 40))  # dupes
    expected = torch.tensor(brute_force_r1(first, second, domain, query))
    torch.testing.assert_close(metric.compute(), expected)


def test_domain_r1_ties_are_pessimistic_and_a_domain_without_queries_is_nan() -> None:
    same = F.normalize(torch.ones(2, 3), dim=-1)
    metric = DomainRetrievalR1(2)
    metric.update(same, same, torch.tensor([0, 0]), torch.tensor([True, True]), torch.arange(2))
    recall = metric.compute()
    assert recall[0] == 0.0 and recall[1].isnan()


class _Data:
    labels = {"domain": 2, "paraphrase": 2}
    class_names = {"domain": ["kitchen", "sports"]}


class _Module:
    device = torch.device("cpu")


def test_evaluator_keys_queries_from_the_positive_label() -> None:
    assert EVALUATORS["domain_retrieval"] is DomainRetrieval
    evaluator = DomainRetrieval(_Module(), _Data(), {})
    e = torch.eye(4)
    out = {
        "embeddings": {"text": e, "text@1": e[[0, 1, 3, 2]]},
        "labels": {"domain": torch.tensor([0, 0, 1, 1]), "paraphrase": torch.tensor([1, 1, 0, 0])},
        "index": torch.arange(4),
    }
    evaluator.update(out, {})
    values = evaluator.compute()
    assert set(values) == {"domain_retrieval/kitchen/R1", "domain_retrieval/mean_R1"}
    assert values["domain_retrieval/kitchen/R1"] == 100.0
    with pytest.raises(ValueError, match="domain_retrieval.label: the data has no label 'x'"):
        DomainRetrieval(_Module(), _Data(), {"label": "x"})
