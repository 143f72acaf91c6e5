"""ALPRO (modules/alpro.py): per-sample draws, the frozen prompter, the ablation and the entity
outputs the ``classifier`` evaluator reads."""

from __future__ import annotations

import pytest
import torch

from modules.alpro import ALPRO, ALPROConfig, mask_tokens, random_crops, sample_generators
from modules.towers.tokenizer import WordTokenizer
from tests.tiny_modules import MODEL, OPTIM, word_state

WORDS = {"color": ["red", "blue"], "shape": ["circle", "square", "cross"]}
VOCAB = ["<pad>", "<unk>", "<cls>", "a", "video", "of", "the", "one", "footage", "portrait"]
VOCAB += ["moves", "left", "red", "blue", "circle", "square", "cross"]
CAPTIONS = ["a red circle moves left", "the blue square", "a blue cross moves", "red cross"]


def tiny_alpro(seed: int = 0, **method) -> ALPRO:
    torch.manual_seed(seed)
    video = {"name": "frames", "frame": {"name": "cnn", "channels": [8]}, "width": 16}
    return ALPRO(
        method={"name": "alpro", "entity_words": WORDS, **method},
        model={**MODEL, "video": {**video, "depth": 1, "heads": 2}},
        optim=OPTIM,
        tokenizer=word_state(VOCAB),
        context={
            "modalities": ["video", "text"],
            "image_size": 24,
            "num_frames": 4,
            "max_text_len": 8,
        },
    )


def batch_of(module: ALPRO) -> dict:
    torch.manual_seed(0)
    ids, mask = module.tokenizer.encode(CAPTIONS)
    return {
        "video": torch.rand(4, 4, 3, 24, 24) * 2 - 1,
        "text_ids": ids,
        "text_mask": mask,
        "index": torch.tensor([10, 11, 12, 13]),
        "item_id": torch.tensor([0, 1, 2, 2]),
        "label/color": torch.tensor([0, 1, 1, 0]),
        "label/shape": torch.tensor([0, 1, 2, 2]),
    }


def test_masking_spares_cls_and_padding_and_follows_bert_rates() -> None:
    ids = torch.randint(3, 50, (400, 30))
    valid = torch.ones(400, 30, dtype=torch.bool)
    valid[:, 20:] = False
    masked, labels = mask_tokens(
        ids, valid, sample_generators(torch.arange(400), 0, 0), 0.15, 1, 3, 50
    )
    chosen = labels != -100
    assert not chosen[:, 0].any() and not chosen[:, 20:].any()
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(masked[~chosen], ids[~chosen])
    assert abs(chosen[:, 1:20].float().mean().item() - 0.15) < 0.015
    assert abs((masked[chosen] == 1).float().mean().item() - 0.8) < 0.04


def test_a_full_size_crop_is_the_clip_and_crops_keep_the_shape() -> None:
    video = torch.rand(3, 4, 3, 24, 24)
    generators = sample_generators(torch.arange(3), 0, 1)
    torch.testing.assert_close(random_crops(video, generators, (1.0, 1.0)), video)
    crops = random_crops(video, sample_generators(torch.arange(3), 0, 1), (0.4, 0.7))
    assert crops.shape == video.shape and not torch.allclose(crops, video)


def test_draws_of_a_sample_do_not_depend_on_the_rest_of_the_batch() -> None:
    module = tiny_alpro().train()
    batch = batch_of(module)
    whole = module.encode(batch)
    half = module.encode({k: v[2:] for k, v in batch.items()})
    for name in ("text_masked", "video_crop"):
        torch.testing.assert_close(half[name].pooled, whole[name].pooled[2:])


def test_pem_reads_the_frozen_prompter_and_the_ablation_leaves_its_head_untrained() -> None:
    module = tiny_alpro(confidence=0.0).train()  # every crop kept, whatever the init
    module.set_teacher(module.state_dict())
    batch = batch_of(module)
    terms = module.losses(batch, module.encode(batch))
    assert set(terms) == {"vtc", "vtm", "mlm", "pem"}
    module.total_loss(terms).backward()
    assert all(p.grad is None for p in module.teacher.parameters())
    assert module.pem_head[0].weight.grad.abs().sum() > 0
    crops = module.crops(batch)
    labels, _ = module.prompter_labels(crops)
    with torch.no_grad():  # the trained towers move: the prompter's labels do not
        for p in module.towers.parameters():
            p.add_(0.1)
    torch.testing.assert_close(module.prompter_labels(crops)[0], labels)
    module.set_teacher(tiny_alpro(seed=1).state_dict())  # another prompter: other labels
    assert not torch.allclose(module.prompter_labels(crops)[0], labels)

    ablation = tiny_alpro(loss_weights={"pem": 0.0}).train()
    ablation.set_teacher(module.state_dict())
    ablation.total_loss(ablation.losses(batch, ablation.encode(batch))).backward()
    assert ablation.pem_head[0].weight.grad is None


def test_entity_logits_are_the_marginals_of_the_entity_distribution() -> None:
    module = tiny_alpro().eval()
    batch = batch_of(module)
    outputs = module.encode(batch)
    assert set(outputs) == {"video", "text"}  # evaluation builds no crops or masked captions
    got = module.eval_outputs(batch, outputs)
    assert got["logits/video/color"].shape == (4, 2)
    assert got["logits/video/shape"].shape == (4, 3)
    ids, mask = module.tokenizer.encode([""] * 4)
    empty = module.towers["text"]({"text_ids": ids, "text_mask": mask})
    p = module.entity_logits(empty.tokens, empty.mask, outputs["video"].tokens).softmax(1)
    assert module.entities[:3] == ["red circle", "red square", "red cross"]
    grid = p.view(4, 2, 3)
    torch.testing.assert_close(got["logits/video/color"].exp(), grid.sum(2))
    torch.testing.assert_close(got["logits/video/shape"].exp(), grid.sum(1))
    assert module.evaluators() == {"classifier": {}}
    assert module.eval_outputs({k: v for k, v in batch.items() if "label" not in k}, outputs) == {}


@pytest.mark.parametrize(
    ("bad", "key"),
    [
        ({"entity_words": {}}, "entity_words"),
        ({"entity_words": WORDS, "templates": ["no slot"]}, "templates"),
        ({"entity_words": WORDS, "crop_scale": (0.8, 0.5)}, "crop_scale"),
        ({"entity_words": WORDS, "confidence": 1.5}, "confidence"),
        ({"entity_words": WORDS, "mlm_probability": 0.0}, "mlm_probability"),
    ],
)
def test_config_errors_name_the_key(bad: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        ALPROConfig(**bad)


def test_alpro_needs_the_word_level_text_tower() -> None:
    assert isinstance(tiny_alpro().tokenizer, WordTokenizer)
