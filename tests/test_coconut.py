"""COCONUT: the loss terms on a batch with and without rehearsal samples, the frozen teacher,
the intent head carried from the previous task, the earlier models' logits, and the
``continual`` evaluator's accuracy matrix, average accuracy and forgetting."""

from __future__ import annotations

import pytest
import torch

from callbacks.continual import ContinualAccuracy
from modules.base import FitContext
from modules.coconut import COCONUT
from modules.towers.tokenizer import WordTokenizer
from tests.tiny_modules import MODEL, OPTIM, word_state

VOCAB = WordTokenizer.build(["on red", "off blue yes", "up cat", "down dog"]).vocab
TEXTS = ["on red", "off blue yes", "up cat", "down dog", "on red", "up cat"]


def module(seed: int = 0, **method) -> COCONUT:
    torch.manual_seed(seed)
    return COCONUT(
        method={"name": "coconut", **method},
        model={**MODEL, "audio": {"name": "audio_cnn", "channels": [8, 16]}},
        optim=OPTIM,
        tokenizer=word_state(VOCAB),
        context={
            "modalities": ["audio", "text"],
            "labels": {"intent": 4},
            "n_mels": 8,
            "audio_frames": 16,
            "max_text_len": 8,
        },
    )


def batch(rehearsal: list[int]) -> dict[str, torch.Tensor]:
    ids, mask = WordTokenizer(VOCAB, max_len=8).encode(TEXTS)
    return {
        "audio": torch.randn(6, 8, 16, generator=torch.Generator().manual_seed(1)),
        "text_ids": ids,
        "text_mask": mask,
        "index": torch.arange(6),
        "item_id": torch.arange(6),
        "label/intent": torch.tensor([0, 1, 2, 3, 0, 2]),
        "label/rehearsal": torch.tensor(rehearsal),
    }


def test_nspt_is_zero_without_rehearsal_and_trains_only_the_student():
    model = module().train()
    plain = batch([0] * 6)
    terms = model.losses(plain, model.encode(plain))
    assert terms["nspt"].item() == 0.0 and terms["ce"] > 0 and terms["mm"] > 0
    model.set_teacher(module(seed=1).state_dict())  # a teacher that differs from the student
    mixed = batch([1, 1, 0, 0, 1, 1])
    terms = model.losses(mixed, model.encode(mixed))
    assert terms["nspt"] > 0
    terms["nspt"].backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    audio = [p.grad for p in model.towers["audio"].parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in audio)
    assert all(p.grad is None for p in model.towers["text"].parameters())  # NSPT: audio only


def test_prepare_fit_continues_the_previous_head_and_evaluates_earlier_models():
    first, second = module(seed=1).eval(), module(seed=2).eval()
    model = module(seed=3)
    model.prepare_fit(FitContext([first, second], 6, lambda i: [], lambda g: None))
    assert torch.equal(model.head.weight, second.head.weight)
    model.eval()
    b = batch([0] * 6)
    out = model.eval_outputs(b, model.encode(b))
    assert set(out) == {"logits/audio/intent", "logits/task1/intent", "logits/task2/intent"}
    expected = first.intent_logits(first.towers["audio"]({"audio": b["audio"]}))
    torch.testing.assert_close(out["logits/task1/intent"], expected)
    assert model.evaluators()["continual"] == {"label": "intent"}


def test_config_is_checked():
    with pytest.raises(ValueError, match="nspt_temperature"):
        module(nspt_temperature=0.0)
    with pytest.raises(ValueError, match="method.label"):
        module(label="action")


def test_continual_accuracy_matrix_average_and_forgetting():
    """Tasks {0,1}, {2,3}, {4,5}; the stage of task 3 with the models after tasks 1, 2, 3.
    Items: two per task (labels 0, 1 | 2, 3 | 4, 5)."""
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    preds = torch.tensor(
        [  # model after task 1, task 2, task 3
            [0, 0, 0],  # task 1 item: right, right, right
            [1, 1, 3],  # task 1 item: right, right, wrong
            [0, 2, 4],  # task 2 item: (unseen), right, wrong
            [0, 3, 3],  # task 2 item: (unseen), right, right
            [0, 0, 4],  # task 3 item
            [0, 0, 4],  # task 3 item: wrong for all
        ]
    )
    metric = ContinualAccuracy([[0, 1], [2, 3], [4, 5]], current=3)
    metric.update(preds[:4], labels[:4], torch.arange(4))
    metric.update(preds[4:], labels[4:], torch.arange(4, 6))
    metric.update(preds[:1], labels[:1], torch.arange(1))  # a DDP padding duplicate
    values = metric.compute()
    assert values["task1/accuracy"] == 50.0
    assert values["task2/accuracy"] == 50.0
    assert values["task3/accuracy"] == 50.0
    assert values["last_accuracy"] == 50.0
    # A_1 = 100 (task 1 by model 1), A_2 = 100 (tasks 1-2 by model 2), A_3 = 50
    assert values["average_accuracy"].item() == pytest.approx((100 + 100 + 50) / 3)
    # forgetting: task 1: max(100, 100) - 50 = 50; task 2: 100 - 50 = 50
    assert values["forgetting"].item() == pytest.approx(50.0)
    # without the earlier models: per-task and last accuracy only
    alone = ContinualAccuracy([[0, 1], [2, 3], [4, 5]], current=3)
    alone.update(preds[:, -1:], labels, torch.arange(6))
    assert set(alone.compute()) == {
        "task1/accuracy",
        "task2/accuracy",
        "task3/accuracy",
        "last_accuracy",
    }
