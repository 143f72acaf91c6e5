"""Entity F1 (callbacks/token_f1.py) against a hand-computed example."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from callbacks.evaluators import EVALUATORS
from callbacks.token_f1 import EntityF1, entity_spans

NAMES = ["O", "B-COLOR", "I-COLOR", "B-POSITION", "I-POSITION", "B-SHAPE", "I-SHAPE"]


def test_entity_spans_follow_conlleval():
    assert entity_spans(["B-COLOR", "B-SHAPE", "O", "B-POSITION", "I-POSITION"]) == {
        ("COLOR", 0, 1),
        ("SHAPE", 1, 2),
        ("POSITION", 3, 5),
    }
    # IOB1: I- after O opens an entity; a type change ends one; B- after I- starts a new one
    assert entity_spans(["I-A", "I-A", "I-B", "B-B", "I-B", "O"]) == {
        ("A", 0, 2),
        ("B", 2, 3),
        ("B", 3, 5),
    }
    assert entity_spans(["O", "O"]) == set()


def _example():
    """Three sentences (source, target, target) and a repeat of the first (DDP padding).
    Source: 1 of 3 predicted entities right, 3 gold -> P = R = F1 = 100/3.
    Target: 2 right of 3 predicted, 2 gold -> P = 200/3, R = 100, F1 = 80."""
    gold = [
        ["B-COLOR", "B-SHAPE", "O", "B-POSITION", "I-POSITION"],
        ["I-COLOR", "I-COLOR", "O", "B-SHAPE"],
        ["O", "O"],
    ]
    predicted = [
        ["B-COLOR", "B-COLOR", "O", "B-POSITION", "O"],
        ["B-COLOR", "I-COLOR", "O", "B-SHAPE"],
        ["B-SHAPE", "O"],
    ]
    return gold, predicted


def test_entity_f1_by_hand_per_language_each_sentence_once():
    gold, predicted = _example()
    metric = EntityF1(("source", "target"))
    metric.update(predicted, gold, torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2]))
    metric.update(predicted[:1], gold[:1], torch.tensor([0]), torch.tensor([0]))
    values = {k: float(v) for k, v in metric.compute().items()}
    assert values["source/precision"] == pytest.approx(100 / 3)
    assert values["source/recall"] == pytest.approx(100 / 3)
    assert values["source/f1"] == pytest.approx(100 / 3)
    assert values["target/precision"] == pytest.approx(200 / 3)
    assert values["target/recall"] == pytest.approx(100.0)
    assert values["target/f1"] == pytest.approx(80.0)


def test_evaluator_reads_logits_at_the_tagged_tokens():
    gold, predicted = _example()
    width = 7  # <cls> + at most 5 words + padding
    tags = torch.full((3, width), -1)
    pred_ids = torch.zeros(3, width, dtype=torch.long)
    for b, (g, p) in enumerate(zip(gold, predicted, strict=True)):
        tags[b, 1 : len(g) + 1] = torch.tensor([NAMES.index(t) for t in g])
        pred_ids[b, 1 : len(p) + 1] = torch.tensor([NAMES.index(t) for t in p])
    pred_ids[:, 0] = 5  # <cls> and padding predictions are not words: ignored
    logits = F.one_hot(pred_ids, len(NAMES)).float()
    module = SimpleNamespace(modalities=("text",), device=torch.device("cpu"))
    datamodule = SimpleNamespace(class_names={"tags": NAMES}, language_names=("source", "target"))
    evaluator = EVALUATORS["token_f1"](module, datamodule, {})
    out = {
        "outputs": {"logits/text/tags": logits},
        "labels": {"language": torch.tensor([0, 1, 1])},
        "index": torch.tensor([0, 1, 2]),
    }
    evaluator.update(out, {"tags": tags})
    values = {k: float(v) for k, v in evaluator.compute().items()}
    assert values["token_f1/source/f1"] == pytest.approx(100 / 3)
    assert values["token_f1/target/f1"] == pytest.approx(80.0)
    with pytest.raises(ValueError, match="token_f1.modality"):
        EVALUATORS["token_f1"](module, datamodule, {"modality": "image"})


def test_words_cut_by_max_text_len_count_as_missed_entities():
    """A sentence of 5 words whose tokens stop after word 2: the cut entity B-SHAPE (word 4)
    is a missed gold entity, and POSITION (words 2-3) cut in the middle is wrong."""
    gold = ["B-COLOR", "B-POSITION", "I-POSITION", "O", "B-SHAPE"]
    ids = [NAMES.index(t) for t in gold]
    tags = torch.tensor([[-1, ids[0], ids[1]]])  # <cls> + the first two words only
    logits = F.one_hot(torch.tensor([[0, ids[0], ids[1]]]), len(NAMES)).float()
    module = SimpleNamespace(modalities=("text",), device=torch.device("cpu"))
    datamodule = SimpleNamespace(class_names={"tags": NAMES}, language_names=("source", "target"))
    out = {
        "outputs": {"logits/text/tags": logits},
        "labels": {"language": torch.tensor([0])},
        "index": torch.tensor([0]),
    }
    evaluator = EVALUATORS["token_f1"](module, datamodule, {})
    evaluator.update(out, {"tags": tags, "word_tags": torch.tensor([ids])})
    with pytest.warns(UserWarning, match="token_f1: 1 sentence"):
        values = {k: float(v) for k, v in evaluator.compute().items()}
    # predicted COLOR (right) and POSITION(1, 2) (wrong: gold is 1-3); gold 3 entities
    assert values["token_f1/source/precision"] == pytest.approx(50.0)
    assert values["token_f1/source/recall"] == pytest.approx(100 / 3)
    # without the full gold tags (another family) the cut words are simply not scored
    plain = EVALUATORS["token_f1"](module, datamodule, {})
    plain.update(out, {"tags": tags})
    assert float(plain.compute()["token_f1/source/recall"]) == pytest.approx(100.0)
