"""The class-retrieval evaluator's subsets: retrieval among a subset's items alone."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from callbacks.evaluators import ClassRetrievalEvaluator
from callbacks.metrics import ClassRetrieval

DATA = SimpleNamespace(
    class_retrieval_labels=("shape", "color"),
    class_names={"shape": ["circle", "square"], "color": ["red", "blue", "green"]},
)
MODULE = SimpleNamespace(device=torch.device("cpu"), modalities=("image", "text"))


def outputs(n: int = 24, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    shape, color = torch.randint(2, (n,), generator=g), torch.randint(3, (n,), generator=g)
    image = F.normalize(torch.randn(n, 8, generator=g), dim=1)
    return {
        "labels": {"shape": shape, "color": color},
        "embeddings": {"image": image},
        "item_id": torch.arange(n),
    }


def test_a_subset_is_retrieval_among_its_items_alone():
    out = outputs()
    evaluator = ClassRetrievalEvaluator(
        MODULE, DATA, {"subsets": {"held_out": {"color": ["green", "blue"]}}}
    )
    evaluator.update(out, {})
    got = evaluator.compute()
    inside = out["labels"]["color"] >= 1  # blue (1) or green (2)
    reference = ClassRetrieval()
    classes = out["labels"]["shape"] * 1024 + out["labels"]["color"]
    reference.update(out["embeddings"]["image"][inside], classes[inside], out["item_id"][inside])
    want = reference.compute()
    for key in ("R1", "mAP"):
        torch.testing.assert_close(got[f"class_retrieval/held_out/{key}"], want[key])
    everything = ClassRetrieval()
    everything.update(out["embeddings"]["image"], classes, out["item_id"])
    torch.testing.assert_close(got["class_retrieval/mAP"], everything.compute()["mAP"])
    assert not torch.equal(got["class_retrieval/held_out/mAP"], got["class_retrieval/mAP"])


def test_unknown_subset_labels_and_classes_are_errors():
    with pytest.raises(ValueError, match="no class names for 'size'"):
        ClassRetrievalEvaluator(MODULE, DATA, {"subsets": {"x": {"size": ["big"]}}})
    with pytest.raises(ValueError, match=r"color has no classes \['purple'\]"):
        ClassRetrievalEvaluator(MODULE, DATA, {"subsets": {"x": {"color": ["purple"]}}})
