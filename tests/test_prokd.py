"""ProKD (modules/prokd.py): the teacher's and the student's loss terms on a real batch, the
baseline switch, the student's prototype bank and its preparation from the teacher stage.
The losses themselves: tests/test_losses_prokd.py; the metric: tests/test_token_f1.py."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from experiments.config import load_experiment
from experiments.stages import build, fit_context
from modules.prokd import ProKDConfig
from modules.towers.tokenizer import WordTokenizer

YAML = Path(__file__).resolve().parents[1] / "experiments" / "prokd.yaml"
TINY = ["data.num_train=24", "data.num_val=4", "data.num_test=4", "data.batch_size=16"]


@pytest.fixture(scope="module")
def stages():
    """(datamodule, teacher module, student module, one training batch), random towers."""
    teacher_cfg, student_cfg = (s.plain for s in load_experiment(YAML, TINY))
    torch.manual_seed(0)
    datamodule, teacher = build(teacher_cfg)
    _, student = build(student_cfg)
    batch = next(iter(datamodule.train_dataloader()))
    return datamodule, teacher, student, batch


def test_teacher_terms_and_the_direct_transfer_switch(stages):
    _, teacher, _, batch = stages
    terms = teacher.losses(batch, teacher.encode(batch))
    assert set(terms) == {"ce", "align"} and all(torch.isfinite(v) for v in terms.values())
    teacher.method_cfg = replace(teacher.method_cfg, prototypes=False)
    try:
        assert set(teacher.losses(batch, teacher.encode(batch))) == {"ce"}
    finally:
        teacher.method_cfg = replace(teacher.method_cfg, prototypes=True)
    # the CE reads source words only: changing the target's hidden tags changes nothing
    hidden = batch["tags"].clone()
    target = batch["label/language"] == 1
    hidden[target] = torch.where(hidden[target] == -2, 0, hidden[target])
    with torch.no_grad():
        ce = teacher.losses(batch, teacher.encode(batch))["ce"]
        again = teacher.losses({**batch, "tags": hidden}, teacher.encode(batch))["ce"]
    torch.testing.assert_close(ce, again)


def test_student_is_prepared_from_the_teacher_and_updates_its_bank_in_training_only(stages):
    datamodule, teacher, student, batch = stages
    with pytest.raises(ValueError, match="features_from: prokd's student stage reads 1"):
        student.prepare_fit(fit_context(datamodule, []))
    with pytest.raises(ValueError, match="features_from: prokd's teacher stage reads 0"):
        teacher.prepare_fit(fit_context(datamodule, [student]))
    other = copy.deepcopy(teacher)
    other.tokenizer = WordTokenizer(teacher.tokenizer.vocab[:-1])
    with pytest.raises(ValueError, match="teacher_from: the student needs the teacher's tokenizer"):
        student.prepare_fit(fit_context(datamodule, [other]))
    student.prepare_fit(fit_context(datamodule, [teacher.eval()]))
    torch.testing.assert_close(student.teacher_head.weight, teacher.head.weight)
    assert not torch.equal(student.head.weight, teacher.head.weight)  # the student starts afresh
    for name, value in teacher.towers.state_dict().items():
        torch.testing.assert_close(student.teacher.state_dict()[name], value)
    assert not student.bank_seen.any()
    student.eval()
    with torch.no_grad():
        student.losses(batch, student.encode(batch))
    assert not student.bank_seen.any()  # evaluation leaves the bank alone
    student.train()
    terms = student.losses(batch, student.encode(batch))
    assert set(terms) == {"kd", "self_training"}
    assert student.bank_seen.any() and all(torch.isfinite(v) for v in terms.values())
    terms["kd"].backward()
    assert student.teacher_head.weight.grad is None  # the teacher stays frozen


def test_student_trains_on_target_words_only(stages):
    _, _, student, batch = stages
    source = batch["label/language"] == 0
    changed = dict(batch)
    changed["text_ids"] = batch["text_ids"].clone()
    changed["text_ids"][source] = batch["text_ids"][~source][: int(source.sum())]
    student.train()
    with torch.no_grad():
        kd = student.losses(batch, student.encode(batch))["kd"]
        again = student.losses(changed, student.encode(changed))["kd"]
    torch.testing.assert_close(kd, again)


def test_eval_outputs_are_tag_logits_per_token(stages):
    _, teacher, _, batch = stages
    logits = teacher.eval_outputs(batch, teacher.encode(batch))["logits/text/tags"]
    assert logits.shape == (*batch["text_ids"].shape, teacher.num_tags)
    assert teacher.evaluators() == {"token_f1": {}}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("stage", "both", "stage: expected 'teacher' or 'student'"),
        ("temperature", 0.0, "temperature, distance_temperature: must be positive"),
        ("momentum", 1.0, r"momentum: must be in \[0, 1\)"),
    ],
)
def test_config_errors_name_the_key(field, value, message):
    with pytest.raises(ValueError, match=message):
        ProKDConfig(**{field: value})
