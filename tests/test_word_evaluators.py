"""The word evaluators: word translation P@k by NN and CSLS (callbacks/word_translation.py) and
the semantic-shift ranking (callbacks/semantic_shift.py), against hand-computed values."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from callbacks.semantic_shift import SemanticShift, average_precision, precision_at_k
from callbacks.word_translation import WordTranslation, WordTranslationPrecision

MODULE = SimpleNamespace(modalities=("corpus_a", "corpus_b"), device=torch.device("cpu"))


def out(a, b, index, **labels):
    return {
        "embeddings": {"corpus_a": a, "corpus_b": b},
        "index": index,
        "labels": labels,
    }


def test_word_translation_csls_beats_nn_on_a_hub_and_counts_any_gold() -> None:
    """Words 0-7 are sources ``0.8 e_i + h``; words 8-15 targets ``e_i`` (gold of source i) and
    word 16 the hub ``h`` (a target): NN always answers the hub, CSLS the gold word. Source 0
    also lists the hub as a second gold translation: correct under NN too."""
    eye = torch.eye(9)
    a = torch.zeros(17, 9)
    a[:8] = F.normalize(0.8 * eye[:8] + eye[8], dim=1)
    b = torch.zeros(17, 9)
    b[8:16], b[16] = eye[:8], eye[8]
    gold = torch.full((17, 2), -1)
    gold[:8, 0] = torch.arange(8, 16)
    gold[0, 1] = 16
    source = (torch.arange(17) < 8).long()
    evaluator = WordTranslation(MODULE, None, {"knn": 3})
    idx = torch.arange(17)
    labels = {"source": source, "target": 1 - source, "gold": gold}
    evaluator.update(out(a[:9], b[:9], idx[:9], **{k: v[:9] for k, v in labels.items()}), {})
    evaluator.update(out(a[9:], b[9:], idx[9:], **{k: v[9:] for k, v in labels.items()}), {})
    evaluator.update(out(a[:3], b[:3], idx[:3], **{k: v[:3] for k, v in labels.items()}), {})
    result = evaluator.compute()
    assert result["word_translation/nn/P1"].item() == pytest.approx(100 / 8)
    assert result["word_translation/csls/P1"].item() == pytest.approx(100.0)
    assert result["word_translation/nn/P5"].item() == pytest.approx(100.0)  # gold is 2nd
    assert set(result) == {f"word_translation/{k}/P{n}" for k in ("nn", "csls") for n in (1, 5, 10)}


def test_word_translation_needs_queries() -> None:
    metric = WordTranslationPrecision()
    metric.update(
        torch.eye(2),
        torch.eye(2),
        torch.ones(2),
        torch.ones(2),
        torch.full((2, 1), -1),
        torch.arange(2),
    )
    assert metric.compute() == {}


def test_ranking_helpers() -> None:
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = torch.tensor([1, 0, 1, 0, 0])
    assert average_precision(scores, labels).item() == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert precision_at_k(scores, labels, 2).item() == pytest.approx(0.5)
    tied = torch.tensor([0.5, 0.5])
    assert average_precision(tied, torch.tensor([0, 1])).item() == pytest.approx(0.5)


def test_semantic_shift_ranks_by_cosine_distance_and_skips_unknown_words() -> None:
    a = F.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    b = a.clone()
    b[1], b[4] = -a[1], F.normalize(a[4] + a[0], dim=0)  # word 1 moved most, word 4 some
    b[5] = -a[5]  # far, but not in both vocabularies (-1): left out
    shifted = torch.tensor([0, 1, 0, 0, 1, -1])
    evaluator = SemanticShift(MODULE, None, {})
    evaluator.update(out(a, b, torch.arange(6), shifted=shifted), {})
    result = evaluator.compute()
    assert result["semantic_shift/auroc"].item() == pytest.approx(1.0)
    assert result["semantic_shift/average_precision"].item() == pytest.approx(1.0)
    assert result["semantic_shift/precision_at_k"].item() == pytest.approx(1.0)
    swapped = SemanticShift(MODULE, None, {})
    swapped.update(out(a, b, torch.arange(6), shifted=torch.tensor([1, 0, 1, 1, 0, -1])), {})
    assert swapped.compute()["semantic_shift/auroc"].item() == pytest.approx(0.0)
