"""ProKD (modules/prokd.py): the teacher's and the student's loss terms on a real batch compared
with the loss functions called by hand on the same features, the baseline switches (direct
transfer, TSL, plain self-training), the student's EMA tower and prototype bank, its
preparation from the teacher stage, and that the target's hidden tags never reach training.
The losses themselves: tests/test_losses_prokd.py; the metric: tests/test_token_f1.py."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from experiments.config import load_experiment
from experiments.stages import build, fit_context
from modules.losses.prokd import (
    distillation_mse,
    prototype_alignment,
    prototype_weights,
    rectified_labels,
)
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
    for name, value in student.towers.state_dict().items():  # the EMA starts as the student
        torch.testing.assert_close(student.ema.state_dict()[name], value)
    assert not student.bank_seen.any()
    student.eval()
    with torch.no_grad():
        student.losses(batch, student.encode(batch))
    assert not student.bank_seen.any() and int(student.ema_steps) == 0  # evaluation: no update
    student.train()
    terms = student.losses(batch, student.encode(batch))
    assert set(terms) == {"kd", "self_training"}
    assert student.bank_seen.any() and all(torch.isfinite(v) for v in terms.values())
    assert int(student.ema_steps) == 1
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
        ("ema_momentum", -0.1, r"ema_momentum: must be in \[0, 1\)"),
        ("student_baseline", "kl", "student_baseline: expected 'tsl' or 'self_training'"),
    ],
)
def test_config_errors_name_the_key(field, value, message):
    with pytest.raises(ValueError, match=message):
        ProKDConfig(**{field: value})


# ---------------------------------------------------------------- the terms, by hand


def _words(batch):
    """Flat tags [B*L] and the source / target word masks the losses select."""
    tags = batch["tags"].flatten()
    language = batch["label/language"].unsqueeze(1).expand_as(batch["tags"]).flatten()
    return tags, (tags >= 0) & (language == 0), (tags != -1) & (language == 1)


def _means(features, labels, k):
    """Class means by a loop (independent of class_means): (means [K, D], present [K])."""
    means = torch.zeros(k, features.shape[1])
    present = torch.zeros(k, dtype=torch.bool)
    for c in range(k):
        rows = [i for i in range(len(labels)) if int(labels[i]) == c]
        if rows:
            means[c], present[c] = features[rows].mean(0), True
    return means, present


def _hidden_tags_revealed(batch, seed=0):
    """The batch with every hidden (-2) target tag replaced by a random real tag id."""
    tags = batch["tags"].clone()
    hidden = tags == -2
    generator = torch.Generator().manual_seed(seed)
    tags[hidden] = torch.randint(0, 13, (int(hidden.sum()),), generator=generator)
    return {**batch, "tags": tags}


def _prepared_student(stages, **overrides):
    """A fresh student prepared from the (fixture's) teacher, in eval mode, config overridden."""
    datamodule, teacher, student, _ = stages
    student = copy.deepcopy(student)
    student.ema_steps.zero_()  # (the fixture's student may have taken a step already)
    student.bank.zero_()
    student.bank_seen.zero_()
    student.prepare_fit(fit_context(datamodule, [teacher.eval()]))
    student.method_cfg = replace(student.method_cfg, **overrides)
    return student.eval()


def test_teacher_terms_equal_ce_and_l_pa_of_prototypes_by_hand(stages):
    _, teacher, _, batch = stages
    teacher.eval()
    outputs = teacher.encode(batch)
    tokens = outputs["text"].tokens
    terms = teacher.losses(batch, outputs)
    tags, source, target = _words(batch)
    assert int(target.sum()) > 0 and (tags[target] == -2).all()  # hidden target tags
    logits = teacher.head(tokens).flatten(0, 1)
    ce = F.cross_entropy(logits[source], tags[source])
    torch.testing.assert_close(terms["ce"], ce)
    features = F.normalize(tokens, dim=-1).flatten(0, 1)
    pseudo = logits.argmax(-1)  # the tagger's own predictions on the target words
    c_source, on_source = _means(features[source], tags[source], teacher.num_tags)
    c_target, on_target = _means(features[target], pseudo[target], teacher.num_tags)
    valid = on_source & on_target
    assert int(valid.sum()) >= 2
    expected = prototype_alignment(c_source, c_target, valid, teacher.method_cfg.temperature)
    torch.testing.assert_close(terms["align"], expected)
    assert float(terms["align"].detach()) > 0.01
    (grad,) = torch.autograd.grad(terms["align"], tokens)  # L_PA moves the target's features
    target_rows = batch["label/language"] == 1
    assert grad[target_rows].abs().sum() > 0 and grad[~target_rows].abs().sum() > 0


def test_target_tags_never_reach_training(stages):
    _, teacher, _, batch = stages
    revealed = _hidden_tags_revealed(batch)
    teacher.eval()
    with torch.no_grad():
        hidden_terms = teacher.losses(batch, teacher.encode(batch))
        revealed_terms = teacher.losses(revealed, teacher.encode(revealed))
    for key in ("ce", "align"):
        torch.testing.assert_close(hidden_terms[key], revealed_terms[key])
    student = _prepared_student(stages)
    student.bank.copy_(F.normalize(torch.randn_like(student.bank), dim=-1))
    student.bank_seen.fill_(True)
    with torch.no_grad():
        hidden_terms = student.losses(batch, student.encode(batch))
        revealed_terms = student.losses(revealed, student.encode(revealed))
    for key in ("kd", "self_training"):
        torch.testing.assert_close(hidden_terms[key], revealed_terms[key])


def _teacher_probs_and_ema_features(student, batch):
    with torch.no_grad():
        teacher_tokens = student.teacher["text"](batch).tokens
        probs = student.teacher_head(teacher_tokens).flatten(0, 1).softmax(-1)
        ema = F.normalize(student.ema["text"](batch).tokens, dim=-1).flatten(0, 1)
    return probs, ema


def test_student_terms_equal_kd_and_pst_on_the_ema_features_by_hand(stages):
    _, _, _, batch = stages
    student = _prepared_student(stages, distance_temperature=0.05)
    with torch.no_grad():  # the EMA differs from the student and from the teacher
        for p in student.ema.parameters():
            p.add_(0.05 * torch.randn_like(p))
    student.bank.copy_(F.normalize(torch.randn_like(student.bank), dim=-1))
    student.bank_seen.fill_(True)
    student.bank_seen[3] = False  # an unseen class weighs 0
    outputs = student.encode(batch)
    with torch.no_grad():
        terms = student.losses(batch, outputs)
    _, _, target = _words(batch)
    logits = student.head(outputs["text"].tokens).flatten(0, 1).detach()
    probs, ema = _teacher_probs_and_ema_features(student, batch)
    weights = prototype_weights(ema, student.bank, student.bank_seen, 0.05)
    labels = rectified_labels(probs, weights)
    torch.testing.assert_close(terms["kd"], distillation_mse(logits, probs)[target].mean())
    expected = F.cross_entropy(logits[target], labels[target])
    torch.testing.assert_close(terms["self_training"], expected)
    # the rectification changes labels: CE on the teacher's argmax is a different value
    teacher_labels = probs.argmax(-1)
    assert (labels[target] != teacher_labels[target]).any()
    assert not (labels[target] == 3).any()
    plain = F.cross_entropy(logits[target], teacher_labels[target])
    assert not torch.allclose(terms["self_training"], plain)


def test_baselines_tsl_and_plain_self_training(stages):
    _, _, _, batch = stages
    tsl = _prepared_student(stages, prototypes=False)
    outputs = tsl.encode(batch)
    with torch.no_grad():
        terms = tsl.losses(batch, outputs)
    assert set(terms) == {"kd"}  # TSL: the KD term only, no hard labels
    _, _, target = _words(batch)
    logits = tsl.head(outputs["text"].tokens).flatten(0, 1).detach()
    probs, _ = _teacher_probs_and_ema_features(tsl, batch)
    torch.testing.assert_close(terms["kd"], distillation_mse(logits, probs)[target].mean())
    plain = _prepared_student(stages, prototypes=False, student_baseline="self_training")
    with torch.no_grad():
        terms = plain.losses(batch, outputs)
    expected = F.cross_entropy(logits[target], probs.argmax(-1)[target])
    torch.testing.assert_close(terms["self_training"], expected)


def test_training_step_moves_the_ema_then_groups_its_features_by_the_teacher(stages):
    _, _, _, batch = stages
    student = _prepared_student(stages)
    before = {k: v.clone() for k, v in student.ema.state_dict().items()}
    with torch.no_grad():  # the student moved away from the EMA (as after optimiser steps)
        for p in student.towers.parameters():
            p.add_(0.1 * torch.randn_like(p))
    student.train()
    with torch.no_grad():
        student.losses(batch, student.encode(batch))
    m = student.method_cfg.ema_momentum
    online = student.towers.state_dict()
    for name, param in student.ema.named_parameters():
        torch.testing.assert_close(param, m * before[name] + (1 - m) * online[name])
    student.eval()
    probs, ema = _teacher_probs_and_ema_features(student, batch)
    _, _, target = _words(batch)
    means, present = _means(ema[target], probs.argmax(-1)[target], student.num_tags)
    assert torch.equal(student.bank_seen, present)  # first update: the batch's class means
    torch.testing.assert_close(student.bank[present], means[present])
