"""CWCL and CLIP-retrieval MEA as modules: which tower a real AdamW step moves (bit-identical
frozen towers), config checks and class ids."""

from __future__ import annotations

import pytest
import torch

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
