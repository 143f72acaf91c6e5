"""DSE (modules/dse.py): the cross-encoder's joined pairs, the student reading a cross-encoder
checkpoint as its frozen teacher, its loss recomputed from the teacher's and the student's
logits by hand, the labels-only baseline (alpha = 0) that never runs the teacher, and the pair
logits the classifier evaluator reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from experiments.config import load_experiment
from experiments.stages import build, fit_context
from modules.base import FitContext
from modules.dse import join_pairs, pair_features

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
TINY = ["data.num_train=24", "data.num_val=8", "data.num_test=8", "data.batch_size=8"]


def test_join_pairs_word_level_keeps_the_second_cls_as_separator():
    a = (torch.tensor([[2, 5, 6], [2, 7, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]]).bool())
    b = (torch.tensor([[2, 8, 0], [2, 9, 4]]), torch.tensor([[1, 1, 0], [1, 1, 1]]).bool())
    ids, mask = join_pairs(a, b, max_len=32, skip_first_of_b=False)
    assert ids.tolist() == [[2, 5, 6, 2, 8, 0], [2, 7, 2, 9, 4, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0]]
    ids, mask = join_pairs(a, b, max_len=4, skip_first_of_b=False)  # cut to the positions
    assert ids.tolist() == [[2, 5, 6, 2], [2, 7, 2, 9]] and mask.all()


def test_join_pairs_wordpiece_drops_the_second_cls():
    a = (torch.tensor([[101, 5, 102]]), torch.ones(1, 3, dtype=torch.bool))
    b = (torch.tensor([[101, 7, 102, 0]]), torch.tensor([[1, 1, 1, 0]]).bool())
    ids, mask = join_pairs(a, b, max_len=32, skip_first_of_b=True)
    assert ids.tolist() == [[101, 5, 102, 7, 102, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1, 0]]


@pytest.fixture(scope="module")
def chain():
    """A cross-encoder (the teacher stage) and a DSE student built from dse.yaml, one training
    batch of NLI triples and one batch of STS pairs."""
    stages = load_experiment(EXPERIMENTS / "dse.yaml", TINY)
    torch.manual_seed(0)
    datamodule, teacher = build(stages[0].plain)
    _, student = build(stages[1].plain, datamodule.tokenizer.state())
    student.set_teacher(teacher.state_dict())
    student.prepare_fit(fit_context(datamodule, [teacher]))
    batch = next(iter(datamodule.train_dataloader()))
    datamodule.setup("test")
    pairs = next(iter(datamodule.test_dataloader()))
    return teacher.eval(), student.eval(), batch, pairs


def test_student_reads_the_cross_encoders_towers_and_head(chain):
    teacher, student, batch, _ = chain
    torch.testing.assert_close(student.teacher_head.weight, teacher.pair_head.weight)
    assert not any(p.requires_grad for p in student.teacher.parameters())
    assert not any(p.requires_grad for p in student.teacher_head.parameters())
    with torch.no_grad():
        two = teacher.pair_logits(teacher.encode(batch)["pair@1"])  # premise + entailment
    got = student.teacher_logits(batch, "text@0", "text@1")
    torch.testing.assert_close(got[:, 0], two[:, 1] - two[:, 0])


def test_student_loss_from_the_logits_by_hand(chain):
    _, student, batch, _ = chain
    outputs = student.encode(batch)
    u = [student.embedding("text", outputs[f"text@{v}"]) for v in range(3)]
    head = student.head
    z_pos, z_neg = head(pair_features(u[0], u[1])), head(pair_features(u[0], u[2]))
    t_pos = student.teacher_logits(batch, "text@0", "text@1")
    t_neg = student.teacher_logits(batch, "text@0", "text@2")
    n = len(batch["index"])
    bce = (F.softplus(-z_pos).sum() + F.softplus(z_neg).sum()) / (2 * n)  # labels 1, then 0
    dist = ((z_pos - t_pos) ** 2).sum() + ((z_neg - t_neg) ** 2).sum()
    terms = student.losses(batch, outputs)
    torch.testing.assert_close(terms["task"], 0.5 * bce)
    torch.testing.assert_close(terms["distillation"], 0.5 * dist / (2 * n))


def test_labels_only_baseline_never_runs_the_teacher(chain, monkeypatch):
    _, student, batch, _ = chain
    monkeypatch.setattr(student.method_cfg, "alpha", 0.0)

    def no_teacher(*args):
        raise AssertionError("the teacher ran")

    monkeypatch.setattr(student, "teacher_logits", no_teacher)
    terms = student.losses(batch, student.encode(batch))
    assert terms["distillation"].item() == 0.0 and terms["task"] > 0


def test_pair_logits_for_the_classifier_evaluator(chain):
    teacher, student, _, pairs = chain
    with torch.no_grad():
        out = student.eval_outputs(pairs, student.encode(pairs))["logits/pair/paraphrase"]
        cross = teacher.eval_outputs(pairs, teacher.encode(pairs))["logits/pair/paraphrase"]
    assert out.shape == cross.shape == (len(pairs["index"]), 2)
    assert (out[:, 0] == 0).all()
    assert "text" in student.encode(pairs) and "text@1" in teacher.encode(pairs)


def test_the_head_must_come_from_the_teachers_own_stage(chain):
    teacher, student, _, _ = chain
    other = type(teacher)(**teacher.hparams)  # a cross-encoder with other weights
    with pytest.raises(ValueError, match="same cross_encoder stage"):
        student.prepare_fit(FitContext([other], 0, lambda indices: [], lambda groups: None))
    with pytest.raises(ValueError, match="features_from: dse reads one cross_encoder"):
        student.prepare_fit(FitContext([], 0, lambda indices: [], lambda groups: None))


def test_the_pair_tasks_need_nli_triples():
    stages = load_experiment(EXPERIMENTS / "dse.yaml", [*TINY, "data.train=paraphrase"])
    with pytest.raises(ValueError, match="data.train: nli"):
        build(stages[0].plain)
