"""TSSP + CSSL (modules/topic_segmentation.py, modules/losses/topic_segmentation.py): the
official CSSL selection (hand example, the spec's invariants), each loss against a loop
reference, limits and gradients, the disarrayed copy's labels, and the module's step, outputs
and configuration checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datamodules.segmented_documents import NEW_TOPIC, NEXT_IN_TOPIC, SAME_TOPIC, disarray
from modules.losses.topic_segmentation import (
    batch_cssl_loss,
    cssl_indices,
    cssl_loss,
    segment_ids,
    segmentation_loss,
    tssp_loss,
)
from modules.topic_segmentation import TopicSegmentation
from modules.towers.tokenizer import WordTokenizer
from tests.tiny_modules import OPTIM


def test_segment_ids_follow_the_boundaries() -> None:
    assert segment_ids([0, 0, 1, 1, 0, 1]) == [0, 0, 0, 1, 2, 2]


def test_cssl_indices_hand_example() -> None:
    """Segments a a a | b b | c: the official eop_list rules, k1 = 1, k2 = 3."""
    segments = [0, 0, 0, 1, 1, 2]
    pos, neg = cssl_indices(segments, 1, 3, np.random.default_rng(0))
    assert pos.shape == (1, 6) and neg.shape == (3, 6)
    assert pos[0, 1:].tolist() == [0, 1, 3, 3, 5]  # the preceding sentence; c alone: itself
    assert pos[0, 0] in (0, 1)  # no predecessor: a sentence of a but its last
    assert pos[0, 3] == 3  # b's first: b minus its last sentence is {3}
    assert neg[:, 0].tolist() == [3, 4, 5]  # the three sentences after a
    assert neg[:, 3].tolist() == [5, 5, 5]  # after b: 5, then random among those after b
    # the last segment: a random sentence of the first segment, then the next ones
    assert neg[0, 5] in (0, 1, 2) and neg[:, 5].tolist() == [neg[0, 5] + k for k in range(3)]


def test_cssl_indices_keep_topics_apart_on_random_documents() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        lengths = rng.integers(1, 6, size=rng.integers(2, 6))
        segments = [t for t, n in enumerate(lengths) for _ in range(n)]
        pos, neg = cssl_indices(segments, 2, 3, rng)
        ids = np.array(segments)
        assert (ids[pos] == ids[None]).all()
        assert (ids[neg] != ids[None]).all()
        for i, t in enumerate(segments):
            if lengths[t] == 1:
                assert (pos[:, i] == i).all()


def _cssl_reference(features, positives, negatives, tau):
    def e(i, j):
        return math.exp(F.cosine_similarity(features[i], features[j], dim=0).item() / tau)

    total = 0.0
    for i in range(features.shape[0]):
        top = sum(e(i, j) for j in positives[:, i].tolist())
        bottom = top + sum(e(i, j) for j in negatives[:, i].tolist())
        total -= math.log(top / bottom)
    return total / features.shape[0]


def test_cssl_loss_matches_a_loop_reference_and_ignores_scale() -> None:
    g = torch.Generator().manual_seed(0)
    features = torch.randn(6, 5, generator=g, dtype=torch.float64)
    pos, neg = cssl_indices([0, 0, 0, 1, 1, 2], 1, 3, np.random.default_rng(2))
    pos, neg = torch.as_tensor(pos), torch.as_tensor(neg)
    got = cssl_loss(features, pos, neg, 0.1)
    assert got.item() == pytest.approx(_cssl_reference(features, pos, neg, 0.1), rel=1e-10)
    torch.testing.assert_close(cssl_loss(3.0 * features, pos, neg, 0.1), got)


def test_cssl_loss_limits_and_gradient() -> None:
    """Positives equal to the anchor, negatives opposite: log(1 + 3 e^{-2/tau}) -> 0."""
    anchor = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    pos = torch.tensor([[1, 0, 2]])
    neg = torch.tensor([[2, 2, 0]] * 3)
    expected = math.log(1 + 3 * math.exp(-2 / 0.1))
    assert cssl_loss(anchor, pos, neg, 0.1).item() == pytest.approx(expected, rel=1e-9)
    features = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    p, n = (
        torch.as_tensor(x) for x in cssl_indices([0, 0, 1, 1, 1, 2], 1, 3, np.random.default_rng(0))
    )
    assert torch.autograd.gradcheck(lambda f: cssl_loss(f, p, n, 0.5), (features,))


def test_batch_cssl_skips_one_topic_documents_and_divides_by_the_batch() -> None:
    g = torch.Generator().manual_seed(3)
    features = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    boundary = torch.tensor([[0, 1, 0, 1], [0, 0, 1, -1]])
    seeds = torch.tensor([5, 6])
    pos, neg = cssl_indices([0, 0, 1, 1], 1, 3, np.random.default_rng(5))
    one = cssl_loss(features[0], torch.as_tensor(pos), torch.as_tensor(neg), 0.1)
    got = batch_cssl_loss(features, boundary, seeds, 1, 3, 0.1)
    torch.testing.assert_close(got, one / 2)


def _per_document_reference(logits, labels, scored):
    total = 0.0
    for b in range(labels.shape[0]):
        losses = [
            F.cross_entropy(logits[b, s][None], labels[b, s][None]).item()
            for s in range(labels.shape[1])
            if scored(b, s)
        ]
        total += sum(losses) / len(losses) if losses else 0.0
    return total / labels.shape[0]


def test_segmentation_and_tssp_losses_match_loop_references() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([[0, 1, 0, 0, 1], [0, 0, 1, -1, -1], [1, -1, -1, -1, -1]])
    logits = torch.randn(3, 5, 2, generator=g, dtype=torch.float64)
    last = (labels >= 0).sum(1) - 1
    expected = _per_document_reference(
        logits, labels, lambda b, s: labels[b, s] >= 0 and s != last[b]
    )
    assert segmentation_loss(logits, labels).item() == pytest.approx(expected, rel=1e-10)
    order = torch.tensor([[2, 1, 0, 2, 0], [2, 0, 1, -1, -1], [2, -1, -1, -1, -1]])
    logits3 = torch.randn(3, 5, 3, generator=g, dtype=torch.float64)
    expected = _per_document_reference(logits3, order, lambda b, s: order[b, s] >= 0)
    assert tssp_loss(logits3, order).item() == pytest.approx(expected, rel=1e-10)


def test_disarray_labels_follow_the_original_order() -> None:
    segments = [[f"s{t}_{i}" for i in range(n)] for t, n in enumerate([4, 1, 3, 5])]
    for seed in range(20):
        sentences, boundary, order = disarray(segments, np.random.default_rng(seed), None)
        assert sorted(sentences) == sorted(s for seg in segments for s in seg)
        where = {s: (t, i) for t, seg in enumerate(segments) for i, s in enumerate(seg)}
        for j, s in enumerate(sentences):
            topic, i = where[s]
            if boundary[j]:  # a topic block ends with the topic's own last sentence
                assert i == len(segments[topic]) - 1
            if j == 0 or where[sentences[j - 1]][0] != topic or boundary[j - 1]:
                assert order[j] == NEW_TOPIC
            elif where[sentences[j - 1]][1] == i - 1:
                assert order[j] == NEXT_IN_TOPIC
            else:
                assert order[j] == SAME_TOPIC
        assert sum(boundary) == len(segments)


def test_disarray_borrows_topics_only_when_asked() -> None:
    segments = [["a b", "a c"], ["d e", "d f"], ["g h"]]
    borrowed = [["x y", "x z"]]
    seen = set()
    for seed in range(30):
        rng = np.random.default_rng(seed)
        sentences, _, _ = disarray(segments, rng, lambda: list(borrowed[0]), replace_prob=1.0)
        seen |= set(sentences)
    assert {"x y", "x z"} <= seen
    sentences, _, _ = disarray(segments, np.random.default_rng(0), None, replace_prob=1.0)
    assert not {"x y", "x z"} & set(sentences)


WORDS = "the cat dog sits in a kitchen garden yard runs".split()
MODEL = {
    "embed_dim": 16,
    "text": {"name": "transformer", "width": 16, "depth": 1, "heads": 2},
    "temperature": 0.07,
    "learnable_temperature": True,
    "max_logit_scale": 100.0,
}


def _module(**method) -> TopicSegmentation:
    torch.manual_seed(0)
    tokenizer = WordTokenizer.build(WORDS, max_len=8)
    return TopicSegmentation(
        method={"name": "tssp_cssl", "doc_depth": 1, "doc_heads": 2, **method},
        model=MODEL,
        optim=OPTIM,
        tokenizer=tokenizer.state(),
        context={"modalities": ["text"], "max_text_len": 8},
    )


def _batch() -> dict[str, torch.Tensor]:
    from datamodules.segmented_documents import DocumentCollate, DocumentDataset

    docs = [
        [["the cat sits", "a cat runs", "the cat"], ["the dog sits in a garden", "a dog runs"]],
        [["in a kitchen"], ["the yard", "a garden yard"], ["the cat"]],
    ]
    dataset = DocumentDataset(docs, 16, True, 0.5)
    return DocumentCollate(WordTokenizer.build(WORDS, max_len=8))(
        [dataset[(0, 1)], dataset[(1, 2)]]
    )


def test_module_step_outputs_and_baseline_weights() -> None:
    module = _module()
    batch = _batch()
    outputs = module.encode(batch)
    assert outputs["text"].tokens.shape == (2, 5, 16)
    assert outputs["text"].mask.tolist() == [[True] * 5, [True] * 4 + [False]]
    terms = module.losses(batch, outputs)
    assert set(terms) == set(module.loss_terms) and all(t.isfinite() for t in terms.values())
    module.total_loss(terms).backward()
    assert module.tssp_head.weight.grad.abs().sum() > 0
    prob = module.eval_outputs(batch, outputs)["segmentation/boundary_prob"]
    assert prob.shape == (2, 5) and ((prob >= 0) & (prob <= 1)).all()
    baseline = _module(loss_weights={"disarrayed_segmentation": 0, "tssp": 0, "cssl": 0})
    baseline.total_loss(baseline.losses(batch, baseline.encode(batch))).backward()
    assert baseline.tssp_head.weight.grad is None


def test_padding_sentences_do_not_change_a_document() -> None:
    """A document read alone or beside a longer one (padded) gets the same vectors."""
    module = _module().eval()
    batch = _batch()
    both = module.encode(batch)["text"].tokens
    alone = {k: v[1:2, :4] if k.startswith("text") else v for k, v in batch.items()}
    torch.testing.assert_close(module.encode(alone)["text"].tokens[0], both[1, :4])


@pytest.mark.parametrize(
    "override, key",
    [({"cssl_tau": 0.0}, "cssl_tau"), ({"cssl_negatives": 0}, "cssl_negatives")],
)
def test_config_errors_name_the_key(override, key) -> None:
    with pytest.raises(ValueError, match=f"method.{key}"):
        _module(**override)
