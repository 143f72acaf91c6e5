"""CWCL and CLIP-retrieval MEA as modules: which tower a real AdamW step moves (bit-identical
frozen towers), config checks and class ids."""

from __future__ import annotations

import pytest
import torch

from modules.base import FitContext
from modules.clip_mea import ClipMEA
from modules.cwcl import CWCL
from modules.towers.tokenizer import WordTokenizer
from tests.tiny_modules import MODEL, OPTIM, tiny_batch, word_state

WORDS = ["a picture of a red green blue circle square triangle shape left"]
VOCAB = WordTokenizer.build(WORDS).vocab
SMALL_NAMES = {"shape": ["circle", "square", "triangle"], "color": ["red", "green", "blue"]}


def build(cls, method: dict, frozen: list[str]):
    return cls(
        method=method,
        model={**MODEL, "frozen": frozen},
        optim=OPTIM,
        tokenizer=word_state(VOCAB),
        context={"modalities": ["image", "text"], "image_size": 16, "max_text_len": 8},
    )


def batch(size: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    captions = ["a red circle", "a blue square", "a green triangle", "a red square", "left"]
    return tiny_batch(
        VOCAB,
        (captions + ["a shape"])[:size],
        seed,
        **{
            "label/shape": torch.randint(3, (size,), generator=g),
            "label/color": torch.randint(3, (size,), generator=g),
        },
    )


def step(module) -> None:
    """One real optimiser step of the module's own AdamW on its total loss."""
    optimizer = module.configure_optimizers()["optimizer"]
    module.train()
    b = batch()
    loss = module.total_loss(module.losses(b, module.encode(b)))
    loss.backward()
    optimizer.step()


def snapshot(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module, prefix: str) -> tuple[bool, bool]:
    """(any entry under prefix changed, every entry under prefix bit-identical)."""
    after = module.state_dict()
    keys = [k for k in before if k.startswith(prefix)]
    assert keys
    same = [torch.equal(before[k], after[k]) for k in keys]
    return not all(same), all(same)


# ------------------------------------------------------------------ CWCL


def test_cwcl_trains_the_text_tower_only():
    module = build(CWCL, {"name": "cwcl"}, ["image"])
    before = snapshot(module)
    step(module)
    assert changed(before, module, "towers.image.")[1]
    assert changed(before, module, "towers.text.")[0]


def test_cwcl_needs_its_reference_tower_frozen():
    with pytest.raises(ValueError, match="must be frozen"):
        build(CWCL, {"name": "cwcl"}, [])
    with pytest.raises(ValueError, match="must be one of"):
        build(CWCL, {"name": "cwcl", "reference_to_trained": "hard"}, ["image"])
    text_reference = build(CWCL, {"name": "cwcl", "reference": "text"}, ["text"])
    assert text_reference.trained_side == "image"


# ------------------------------------------------------------------ CLIP-retrieval MEA


def mea(phase: str, frozen: list[str], **extra):
    method = {"name": "clip_mea", "phase": phase, "class_names": SMALL_NAMES, **extra}
    return build(ClipMEA, method, frozen)


def test_text_realign_keeps_every_image_tower_entry_bit_identical():
    module = mea("text_realign", ["image"])
    before = snapshot(module)
    step(module)
    assert changed(before, module, "towers.image.")[1]
    assert changed(before, module, "towers.text.")[0]
    assert module.class_weights is None


@pytest.mark.parametrize("weights", ["learned", "pseudo_caption"])
def test_image_metric_trains_the_image_tower_only(weights):
    module = mea("image_metric", ["text"], class_weights=weights)
    before = snapshot(module)
    step(module)
    assert changed(before, module, "towers.text.")[1]
    assert changed(before, module, "towers.image.")[0]
    temperature = "temperature.log_scale"
    assert torch.equal(before[temperature], module.state_dict()[temperature])
    if weights == "learned":
        assert module.class_weights.shape == (9, MODEL["embed_dim"])
        assert changed(before, module, "class_weights")[0]
    else:
        assert module.class_weights is None
        assert module.pseudo_captions[:2] == [
            "a picture of a red circle",
            "a picture of a green circle",
        ]


def test_each_phase_needs_the_other_tower_frozen_and_a_valid_config():
    with pytest.raises(ValueError, match="model.frozen: \\[text\\]"):
        mea("image_metric", [])
    with pytest.raises(ValueError, match="model.frozen: \\[image\\]"):
        mea("text_realign", ["text"])
    with pytest.raises(ValueError, match="phase"):
        mea("both", ["text"])
    with pytest.raises(ValueError, match="template"):
        mea("image_metric", ["text"], class_weights="pseudo_caption", template="a {shape}")


def test_class_ids_combine_labels_first_slowest_and_mark_missing():
    module = mea("text_realign", ["image"])
    b = {
        "item_id": torch.arange(4),
        "label/shape": torch.tensor([0, 2, 1, -1]),
        "label/color": torch.tensor([1, 0, 2, 0]),
    }
    assert module.class_ids(b).tolist() == [1, 6, 5, -1]
    captions = mea("image_metric", ["text"], class_weights="pseudo_caption").pseudo_captions
    assert captions[6] == "a picture of a red triangle"  # shape 2, colour 0


# ------------------------------------------------------------------ MCIP's train_with_text


def fit_context_of(b: dict[str, torch.Tensor]) -> FitContext:
    """A prepare_fit context whose training items are the rows of ``b`` (two loader batches)."""
    keys = ("image", "text_ids", "text_mask", "item_id")

    def loader(indices):
        assert indices is None
        half = len(b["item_id"]) // 2
        return [{k: b[k][s] for k in keys} for s in (slice(0, half), slice(half, None))]

    return FitContext([], len(b["item_id"]), loader, lambda groups: None)


def mcip(**extra):
    module = mea("image_metric", ["text"], objective="mcip_text", caption_threshold=-1.0, **extra)
    module.prepare_fit(fit_context_of(batch()))
    return module


def test_mcip_retrieves_captions_before_training_and_weighs_its_two_terms():
    module = mcip(caption_top_k=3)
    ctx_metrics = fit_context_of(batch())
    module.prepare_fit(ctx_metrics)
    # 6 training captions, "a red circle" etc. all distinct: a pool of 6, 3 kept per image
    assert module.caption_bank.shape == (6, MODEL["embed_dim"])
    assert module.retrieved.shape == (6, 3) and bool(module.retrieved_keep.all())
    assert ctx_metrics.metrics["mcip/captions_per_image"] == 3.0
    module.train()
    b = batch()
    terms = module.losses(b, module.encode(b))
    assert set(terms) == {"mcip_class", "mcip_caption"}
    torch.testing.assert_close(
        module.total_loss(terms), 0.75 * terms["mcip_class"] + 0.25 * terms["mcip_caption"]
    )
    module.eval()  # evaluation items have no retrieved captions: the class term alone
    assert set(module.losses(b, module.encode(b))) == {"mcip_class"}


def test_mcip_caption_pool_is_deduplicated_and_the_threshold_drops_captions():
    b = batch()
    b["text_ids"][3], b["text_mask"][3] = b["text_ids"][0], b["text_mask"][0]
    module = mea("image_metric", ["text"], objective="mcip_text", caption_threshold=2.0)
    ctx = fit_context_of(b)
    module.prepare_fit(ctx)
    assert module.caption_bank.shape[0] == 5
    assert not module.retrieved_keep.any()  # no cosine exceeds 2
    assert ctx.metrics["mcip/images_without_captions"] == 1.0


def test_mcip_trains_the_image_tower_and_the_proxies_at_100x_the_rate():
    module = mcip()
    optimizer = module.configure_optimizers()["optimizer"]  # with its warm-up schedule
    proxies = [
        g for g in optimizer.param_groups if any(p is module.class_weights for p in g["params"])
    ]
    assert len(proxies) == 1 and len(proxies[0]["params"]) == 1
    assert proxies[0]["initial_lr"] == pytest.approx(100 * OPTIM["lr"])
    assert proxies[0]["weight_decay"] == OPTIM["weight_decay"]
    others = [p for g in optimizer.param_groups[:2] for p in g["params"]]
    assert all(p is not module.class_weights for p in others)
    # the schedule (here in warm-up) scales every group alike: the ratio holds
    assert optimizer.param_groups[0]["lr"] < OPTIM["lr"]
    assert proxies[0]["lr"] == pytest.approx(100 * optimizer.param_groups[0]["lr"])
    before = snapshot(module)
    module.train()
    b = batch()
    module.total_loss(module.losses(b, module.encode(b))).backward()
    optimizer.step()
    assert changed(before, module, "towers.text.")[1]
    assert changed(before, module, "towers.image.")[0]
    assert changed(before, module, "class_weights")[0]


def test_learned_proxies_train_at_100x_by_default_as_mcip():
    plain = mea("image_metric", ["text"])  # learned proxies, arcface (MCIP's train.py)
    groups = plain.configure_optimizers()["optimizer"].param_groups
    assert len(groups) == 3 and groups[2]["initial_lr"] == pytest.approx(100 * OPTIM["lr"])
    one = mea("image_metric", ["text"], proxy_lr_multiplier=1.0)  # one rate for all
    assert len(one.configure_optimizers()["optimizer"].param_groups) == 2
    assert mea("image_metric", ["text"], class_weights="pseudo_caption").lr_multipliers() == {}


def test_mcip_config_checks():
    with pytest.raises(ValueError, match="learned class proxies"):
        mea("image_metric", ["text"], objective="mcip_text", class_weights="pseudo_caption")
    with pytest.raises(ValueError, match="objective"):
        mea("image_metric", ["text"], objective="mcip")
    with pytest.raises(ValueError, match="proxy_lr_multiplier"):
        mea("image_metric", ["text"], proxy_lr_multiplier=0.0)
    module = mea("image_metric", ["text"], objective="mcip_text")
    module.train()
    b = batch()
    with pytest.raises(RuntimeError, match="prepare_fit"):
        module.losses(b, module.encode(b))


def test_lr_multipliers_must_name_a_trainable_parameter():
    module = mea("image_metric", ["text"])
    module.lr_multipliers = lambda: {"towers.text": 10.0}  # frozen
    with pytest.raises(ValueError, match="no trainable parameter"):
        module.configure_optimizers()
    module.lr_multipliers = lambda: {"towers.image": 10.0}  # a module prefix
    groups = module.configure_optimizers()["optimizer"].param_groups
    image = {id(p) for p in module.towers["image"].parameters()}
    assert {id(p) for g in groups[2:] for p in g["params"]} == image
    assert {g["weight_decay"] for g in groups[2:]} == {0.0, OPTIM["weight_decay"]}
