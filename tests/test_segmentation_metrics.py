"""Pk and WindowDiff (callbacks/segmentation.py): hand examples, an independent string
reference written after nltk's ``nltk.metrics.segmentation`` (nltk is not a dependency), the
default k, the metric's per-document average, de-duplication and F1, and the evaluator."""

from __future__ import annotations

import random

import pytest
import torch

from callbacks.evaluators import EVALUATORS
from callbacks.segmentation import SegmentationMetrics, default_k, pk, windowdiff


def _nltk_pk(ref: str, hyp: str, k: int | None = None, boundary: str = "1") -> float:
    """nltk's pk on boundary strings (its code's logic)."""
    if k is None:
        k = int(round(len(ref) / (ref.count(boundary) * 2.0)))
    err = 0
    for i in range(len(ref) - k + 1):
        r = ref[i : i + k].count(boundary) > 0
        h = hyp[i : i + k].count(boundary) > 0
        if r != h:
            err += 1
    return err / (len(ref) - k + 1.0)


def _nltk_windowdiff(seg1: str, seg2: str, k: int, boundary: str = "1") -> float:
    """nltk's windowdiff (unweighted) on boundary strings."""
    wd = 0
    for i in range(len(seg1) - k + 1):
        ndiff = abs(seg1[i : i + k].count(boundary) - seg2[i : i + k].count(boundary))
        wd += min(1, ndiff)
    return wd / (len(seg1) - k + 1.0)


def test_hand_example_where_pk_and_windowdiff_differ() -> None:
    """Windows of k = 2 over 6 sentences: ref counts 1 2 1 0 1, hyp 0 1 1 0 1."""
    ref, hyp = [0, 1, 1, 0, 0, 1], [0, 0, 1, 0, 0, 1]
    assert pk(ref, hyp, 2) == pytest.approx(1 / 5)  # only window 0 disagrees on "any"
    assert windowdiff(ref, hyp, 2) == pytest.approx(2 / 5)  # windows 0 and 1 differ in count
    assert pk(ref, ref) == windowdiff(ref, ref) == 0.0


def test_default_k_is_half_the_mean_segment_length() -> None:
    assert default_k([0, 0, 0, 1, 0, 0, 0, 1]) == 2  # two segments of 4
    assert default_k([0] * 9 + [1]) == 5
    assert default_k([1, 1, 1]) == 1  # nltk would round 0.5 down to 0: at least one


def test_matches_the_nltk_style_reference_on_random_strings() -> None:
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(2, 40)
        ref = [int(rng.random() < 0.25) for _ in range(n - 1)] + [1]
        hyp = [int(rng.random() < 0.25) for _ in range(n - 1)] + [1]
        r, h = "".join(map(str, ref)), "".join(map(str, hyp))
        k = rng.randint(1, n)
        assert pk(ref, hyp, k) == pytest.approx(_nltk_pk(r, h, k))
        assert windowdiff(ref, hyp, k) == pytest.approx(_nltk_windowdiff(r, h, k))
        if len(ref) >= 2 * sum(ref):  # nltk's own k is >= 1 here
            assert pk(ref, hyp) == pytest.approx(_nltk_pk(r, h))


def test_metric_averages_documents_dedups_and_counts_f1() -> None:
    metric = SegmentationMetrics()
    prob = torch.tensor([[0.1, 0.9, 0.7, 0.2, 0.0, 0.3], [0.6, 0.1, 0.2, 0.0, 0.0, 0.0]])
    gold = torch.tensor([[0, 1, 1, 0, 0, 1], [0, 0, 1, -1, -1, -1]])
    metric.update(prob, gold, torch.tensor([0, 1]))
    metric.update(prob[:1], gold[:1], torch.tensor([0]))  # a DDP padding repeat
    out = metric.compute()
    # doc 0: hyp 0 1 1 0 0 1 (the last forced) = ref; doc 1: hyp 1 0 1 vs ref 0 0 1, k = 2
    doc1_pk = pk([0, 0, 1], [1, 0, 1])
    assert out["pk"].item() == pytest.approx(100 * doc1_pk / 2)
    assert out["windowdiff"].item() == pytest.approx(100 * windowdiff([0, 0, 1], [1, 0, 1]) / 2)
    # inner boundaries: doc 0 tp 2; doc 1 fp 1 -> F1 = 4 / 5
    assert out["f1"].item() == pytest.approx(80.0)


def test_evaluator_reads_the_method_output_and_the_batch() -> None:
    class Module:
        device = torch.device("cpu")

    evaluator = EVALUATORS["segmentation"](Module(), None, {"k": 1})
    gold = torch.tensor([[0, 1, 0, 1]])
    out = {"outputs": {"segmentation/boundary_prob": gold.float()}, "index": torch.tensor([3])}
    evaluator.update(out, {"boundary": gold})
    values = evaluator.compute()
    assert values["segmentation/pk"].item() == 0.0 and values["segmentation/f1"].item() == 100.0
    with pytest.raises(ValueError, match="unknown option"):
        EVALUATORS["segmentation"](Module(), None, {"window": 2})
