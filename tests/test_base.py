"""DualTowerModule: temperature storage and clamp, weight-decay groups, schedule, teacher."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from modules.base import FitContext, Temperature, warmup_cosine
from modules.clip import CLIP
from modules.clip_refine import CLIPRefine
from modules.towers.tokenizer import WordTokenizer
from tests.tiny_modules import MODEL, OPTIM, tiny_module, word_state

VOCAB = WordTokenizer.build(["a red circle", "a blue square left of it"]).vocab


def make(cls=CLIP, method=None, **optim):
    return tiny_module(VOCAB, cls, method, **optim)


def batches(n: int, size: int = 4) -> list[dict[str, torch.Tensor]]:
    tok = WordTokenizer(VOCAB, max_len=8)
    gen = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        ids, mask = tok.encode(
            ["a red circle", "a blue square", "a red square", "left of it"][:size]
        )
        out.append(
            {
                "image": torch.randn(size, 3, 16, 16, generator=gen),
                "text_ids": ids,
                "text_mask": mask,
                "index": torch.arange(size) + i * size,
                "item_id": torch.arange(size) + i * size,
            }
        )
    return out


def make_frozen(frozen: list[str]) -> CLIP:
    return CLIP(
        method={"name": "clip"},
        model={**MODEL, "frozen": frozen},
        optim=OPTIM,
        tokenizer=word_state(VOCAB),
        context={"modalities": ["image", "text"], "image_size": 16, "max_text_len": 8},
    )


def fit(module, steps: int) -> None:
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(module, DataLoader(batches(steps), batch_size=None))


def test_temperature_is_stored_as_log_inverse_and_initialised_at_1_over_0_07():
    module = make()
    assert module.temperature.log_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert module.scale.item() == pytest.approx(1 / 0.07, rel=1e-6)


def test_temperature_is_clamped_after_every_step():
    module = make(lr=10.0, warmup_steps=0)
    with torch.no_grad():
        module.temperature.log_scale.fill_(math.log(100.0) - 1e-4)
    fit(module, 3)
    assert 0.0 <= module.temperature.log_scale.item() <= math.log(100.0) + 1e-7


def test_a_temperature_started_outside_its_range_is_clamped_before_the_first_step():
    temperature = Temperature(0.07, max_scale=100.0, max_temperature=math.exp(-3.0))
    assert temperature.log_scale.item() == pytest.approx(3.0)  # log(1/0.07) = 2.66 < 3


def test_no_weight_decay_on_temperature_norms_and_biases():
    module = make()
    trainer = L.Trainer(
        max_steps=10, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    module.trainer = trainer  # estimated_stepping_batches reads max_steps
    groups = module.configure_optimizers()["optimizer"].param_groups
    decayed = {id(p) for p in groups[0]["params"]}
    plain = {id(p) for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert id(module.temperature.log_scale) in plain
    for name, param in module.named_parameters():
        is_norm_or_bias = name.endswith("bias") or ".norm" in name or param.ndim < 2
        assert (id(param) in plain) == is_norm_or_bias, name
        assert (id(param) in decayed) != is_norm_or_bias, name


def test_warmup_is_capped_by_a_fraction_of_a_short_run():
    """A 27-step run (3 epochs of 9 batches) with the default 50 warm-up steps warms up for a
    quarter of its steps, then decays; a long run keeps the configured 50."""
    short = warmup_cosine(warmup=50, total=27, min_ratio=0.0, max_fraction=0.25)
    assert short.warmup_steps() == 6
    assert short(0) == pytest.approx(1 / 6) and short(5) == pytest.approx(1.0)
    assert short(26) < short(10) < 1.0
    assert warmup_cosine(50, 1000, 0.0, max_fraction=0.25).warmup_steps() == 50
    assert warmup_cosine(50, 27, 0.0).warmup_steps() == 26  # uncapped: all but the last step


def test_warmup_then_cosine():
    f = warmup_cosine(warmup=4, total=14, min_ratio=0.1)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0)
    assert f(9) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(14) == pytest.approx(0.1) and f(100) == pytest.approx(0.1)


def test_unknown_loss_weight_is_rejected():
    with pytest.raises(ValueError, match="unknown term"):
        make(method={"name": "clip", "loss_weights": {"clip": 1.0, "rafa": 1.0}})


def test_zero_weight_terms_are_logged_but_not_summed():
    module = make(CLIPRefine, method={"name": "clip_refine", "loss_weights": {"clip": 0.0}})
    terms = {
        "clip": torch.tensor(float("nan")),
        "rafa": torch.tensor(2.0),
        "hycd": torch.tensor(3.0),
    }
    assert module.total_loss(terms).item() == 5.0


def test_teacher_is_a_frozen_snapshot():
    clip = make()
    fit(clip, 2)
    refine = make(CLIPRefine, method={"name": "clip_refine"})
    refine.load_student_weights(clip.state_dict())
    refine.set_teacher(clip.state_dict())
    for name, value in clip.towers.state_dict().items():
        torch.testing.assert_close(refine.teacher.state_dict()[name], value)
        torch.testing.assert_close(refine.towers.state_dict()[name], value)
    assert not any(p.requires_grad for p in refine.teacher.parameters())
    before = {k: v.clone() for k, v in refine.teacher.state_dict().items()}
    fit(refine, 2)
    assert not refine.teacher.training
    for name, value in refine.teacher.state_dict().items():
        torch.testing.assert_close(value, before[name])
    moved = any(not torch.equal(refine.towers.state_dict()[k], before[k]) for k in before)
    assert moved, "the student should train while the teacher stays fixed"


def test_frozen_towers_get_no_gradient_and_stay_in_eval_mode():
    module = make_frozen(["image"])
    before = {k: v.clone() for k, v in module.towers["image"].state_dict().items()}
    text_before = {k: v.clone() for k, v in module.towers["text"].state_dict().items()}
    module.train()
    assert not module.towers["image"].training and module.towers["text"].training
    assert not any(p.requires_grad for p in module.towers["image"].parameters())
    fit(module, 2)
    after = module.towers["image"].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    changed = module.towers["text"].state_dict()
    assert any(not torch.equal(text_before[k], changed[k]) for k in text_before)


def test_frozen_names_must_be_towers_of_the_data():
    with pytest.raises(ValueError, match=r"model.frozen: \['audio'\] not among"):
        make_frozen(["audio"])


def test_init_from_one_tower_keeps_the_other_and_the_temperature():
    source, target = make(), make_frozen([])
    with torch.no_grad():
        source.temperature.log_scale.fill_(1.0)
    text_before = {k: v.clone() for k, v in target.towers["text"].state_dict().items()}
    target.load_student_weights(source.state_dict(), ("image",))
    for k, v in source.towers["image"].state_dict().items():
        assert torch.equal(target.towers["image"].state_dict()[k], v)
    for k, v in text_before.items():
        assert torch.equal(target.towers["text"].state_dict()[k], v)
    assert target.temperature.log_scale.item() == pytest.approx(math.log(1 / 0.07))
    target.load_student_weights(source.state_dict())  # all towers + temperature
    assert target.temperature.log_scale.item() == 1.0


def test_init_from_keeps_a_fixed_temperature_of_the_stage():
    """CUAXU fine-tunes a CLIP at a fixed tau = 0.01: the checkpoint's learned temperature must
    not replace it (it did, silently, before)."""
    source = make()
    with torch.no_grad():
        source.temperature.log_scale.fill_(2.5)
    fixed = CLIP(
        method={"name": "clip"},
        model={**MODEL, "temperature": 0.01, "learnable_temperature": False},
        optim=OPTIM,
        tokenizer=word_state(VOCAB),
        context={"modalities": ["image", "text"], "image_size": 16, "max_text_len": 8},
    )
    fixed.load_student_weights(source.state_dict())
    assert fixed.temperature.log_scale.item() == pytest.approx(math.log(100.0))
    for k, v in source.towers.state_dict().items():
        assert torch.equal(fixed.towers.state_dict()[k], v)


def test_features_from_is_refused_by_methods_that_do_not_read_it():
    with pytest.raises(ValueError, match="features_from: method clip does not read"):
        make().prepare_fit(FitContext([make()], 0, lambda indices: [], lambda groups: None))
    make().prepare_fit(FitContext([], 0, lambda indices: [], lambda groups: None))  # fine


def test_metrics_and_losses_read_the_embedding_hook():
    class Doubled(CLIP):
        def embedding(self, side, output):
            return output.pooled * 2 if side == "image" else -output.pooled

    plain, doubled = make(), make(Doubled)
    doubled.load_state_dict(plain.state_dict())
    batch = batches(1)[0]
    out = plain._eval_step(batch, "val")
    mapped = doubled._eval_step(batch, "val")
    assert torch.allclose(mapped["raw"]["image"], 2 * out["raw"]["image"])
    assert torch.allclose(mapped["embeddings"]["text"], -out["embeddings"]["text"])
    assert torch.allclose(
        doubled.encode_texts(["a red circle"]), -plain.encode_texts(["a red circle"])
    )


def test_align_sum_logs_its_mean_form_beside_it():
    """ALIGN's summed loss is twice CLIP's; ``loss/mean_form`` is the comparable value: CLIP's
    loss on the same embeddings (same weights, same batch)."""
    from modules.align import ALIGN

    align, clip = make(ALIGN, {"name": "align"}), make()
    clip.load_state_dict(align.state_dict())
    batch = batches(1)[0]
    summed = align.losses(batch, align.encode(batch))["align"]
    mean_form = align.scalars({})["loss/mean_form"]
    assert torch.allclose(mean_form, clip.losses(batch, clip.encode(batch))["clip"])
    assert torch.allclose(summed, 2 * mean_form)
    averaged = make(ALIGN, {"name": "align", "reduction": "mean"})
    assert averaged.scalars({}) == {}
