"""Input-label contrast: the loss against a loop and against softmax cross-entropy (one-hot label
embeddings, a linear tower: the spec's check), its gradient, and the method's two heads (class
descriptions through the text encoder, the linear baseline) and their evaluation logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datamodules.sentences import SentencesDataConfig, first_per_class
from datamodules.sources.sentences import SentenceSplit
from modules.input_label_contrast import InputLabelContrast
from modules.losses.input_label_contrast import input_label_contrast_loss, label_logits
from modules.towers.tokenizer import WordTokenizer
from tests.tiny_modules import MODEL, OPTIM, word_state

DESCRIPTIONS = ["cooking in a kitchen", "a sports game", "a science laboratory"]
SENTENCES = ["the chef chopped the onion", "a player kicked the ball", "the chemist mixed it"]
VOCAB = WordTokenizer.build(SENTENCES + DESCRIPTIONS).vocab


def loop_reference(x: torch.Tensor, labels: torch.Tensor, y: torch.Tensor, scale: float):
    total = 0.0
    for i in range(len(x)):
        scores = torch.stack([scale * (x[i] * labels[c]).sum() for c in range(len(labels))])
        total = total - (scores[y[i]] - torch.logsumexp(scores, 0))
    return total / len(x)


def test_loss_matches_the_loop_reference_and_its_gradient_checks() -> None:
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=-1)
    labels = F.normalize(torch.randn(3, 5, generator=g, dtype=torch.float64), dim=-1)
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    torch.testing.assert_close(
        input_label_contrast_loss(x, labels, y, 7.0), loop_reference(x, labels, y, 7.0)
    )
    x.requires_grad_(), labels.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: input_label_contrast_loss(a, b, y, 3.0), (x, labels)
    )


def test_one_hot_label_embeddings_and_a_linear_tower_give_softmax_cross_entropy() -> None:
    """The spec's unit test: s(x, e_c) = x_c, so the loss is CE(W h, y)."""
    g = torch.Generator().manual_seed(1)
    h = torch.randn(8, 6, generator=g, dtype=torch.float64)
    tower = torch.nn.Linear(6, 4, bias=False).double()
    y = torch.randint(0, 4, (8,), generator=g)
    x = tower(h)
    one_hot = torch.eye(4, dtype=torch.float64)
    torch.testing.assert_close(input_label_contrast_loss(x, one_hot, y, 1.0), F.cross_entropy(x, y))


def test_unlabelled_rows_are_left_out_and_shapes_are_checked() -> None:
    x, labels = torch.eye(3), torch.eye(3)
    full = input_label_contrast_loss(x[:2], labels, torch.tensor([0, 1]), 2.0)
    torch.testing.assert_close(
        input_label_contrast_loss(x, labels, torch.tensor([0, 1, -1]), 2.0), full
    )
    with pytest.raises(ValueError, match="differ"):
        label_logits(torch.eye(3), torch.eye(4), 1.0)


def method(context: dict | None = None, **cfg) -> InputLabelContrast:
    torch.manual_seed(0)
    return InputLabelContrast(
        method={"name": "input_label_contrast", "descriptions": DESCRIPTIONS, **cfg},
        model={**MODEL, "temperature": 0.05, "learnable_temperature": False},
        optim=OPTIM,
        tokenizer=word_state(VOCAB),
        context={
            "modalities": ["text"],
            "labels": {"domain": 3},
            "max_text_len": 8,
            **(context or {}),
        },
    )


def test_label_texts_come_from_the_config_then_the_data_descriptions_then_class_names() -> None:
    names = {"class_names": {"domain": ["kitchen", "sports", "science"]}}
    described = {**names, "label_descriptions": {"domain": DESCRIPTIONS[::-1]}}
    assert method(described).label_texts == DESCRIPTIONS
    assert method(described, descriptions=[]).label_texts == DESCRIPTIONS[::-1]
    assert method(names, descriptions=[]).label_texts == ["kitchen", "sports", "science"]


def batch() -> dict[str, torch.Tensor]:
    ids, mask = WordTokenizer(VOCAB, max_len=8).encode(SENTENCES * 2)
    return {
        "text_ids": ids,
        "text_mask": mask,
        "label/domain": torch.tensor([0, 1, 2, 0, 1, 2]),
        "index": torch.arange(6),
        "item_id": torch.arange(6),
    }


def test_descriptions_head_scores_by_the_encoded_descriptions_and_trains_the_encoder() -> None:
    module = method()
    assert module.head is None
    data = batch()
    outputs = module.encode(data)
    logits = module.eval_outputs(data, outputs)["logits/text/domain"]
    x = module.normalized("text", outputs["text"])
    labels = module.encode_texts(DESCRIPTIONS)
    torch.testing.assert_close(logits, 20.0 * x @ labels.T, rtol=1e-4, atol=1e-4)
    loss = module.losses(data, outputs)["ce"]
    torch.testing.assert_close(loss, F.cross_entropy(logits, data["label/domain"]))
    loss.backward()
    assert module.towers["text"].embed.weight.grad.abs().sum() > 0
    assert module.evaluators() == {"classifier": {}}


def test_linear_baseline_uses_a_head_on_the_same_embedding() -> None:
    module = method(head="linear")
    data = batch()
    outputs = module.encode(data)
    x = module.normalized("text", outputs["text"])
    logits = module.eval_outputs(data, outputs)["logits/text/domain"]
    torch.testing.assert_close(logits, module.head(x))
    torch.testing.assert_close(
        module.losses(data, outputs)["ce"], F.cross_entropy(logits, data["label/domain"])
    )


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="head: expected one of"):
        method(head="mlp")
    with pytest.raises(ValueError, match="method.descriptions: need one text per class"):
        method(descriptions=["only one"])
    with pytest.raises(ValueError, match="method.task: the data has no label 'topic'"):
        method(task="topic")


def test_shots_keep_the_first_samples_of_each_class_in_order() -> None:
    split = SentenceSplit(
        texts={"sentence": [f"s{i}" for i in range(8)]},
        item_id=np.arange(8) + 100,
        labels={"domain": np.array([0, 1, 0, 0, 2, 1, 1, 0])},
    )
    few = first_per_class(split, "domain", 2)
    assert few.texts["sentence"] == ["s0", "s1", "s2", "s4", "s5"]
    assert few.item_id.tolist() == [100, 101, 102, 104, 105]
    assert few.labels["domain"].tolist() == [0, 1, 0, 2, 1]
    with pytest.raises(ValueError, match="data.shots: the training data has no label 'topic'"):
        first_per_class(split, "topic", 2)
    with pytest.raises(ValueError, match="data.shots must be at least 1"):
        SentencesDataConfig(shots=0)
