"""Synthetic parallel languages (``data.languages``): K = 1 is today's data bit for bit, the word
mapping is consistent and disjoint across languages, batches are image-major ``[B, K, L]``,
and the 1-to-K module trains on them and logs per-language R@1 and MRV."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from callbacks.evaluation import EmbeddingMetrics
from datamodules import ImageTextDataConfig, ImageTextDataModule
from datamodules.languages import SyntheticLanguages
from modules.clip import CLIP
from modules.grad_cache import cached_backward, split_batch
from modules.one_to_k import OneToK
from modules.towers.tokenizer import SPECIALS, split_words
from tests.tiny_modules import MODEL, OPTIM, setup_with_words, word_state

TINY = dict(num_train=40, num_val=10, num_test=10, batch_size=8, eval_batch_size=16)


def _setup(**kwargs) -> ImageTextDataModule:
    dm = ImageTextDataModule(ImageTextDataConfig(**{**TINY, **kwargs}))
    dm.prepare_data()
    setup_with_words(dm)
    return dm


@pytest.fixture(scope="module")
def multilingual() -> ImageTextDataModule:
    return _setup(languages=3)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a
    )


def test_one_language_is_todays_data_bit_for_bit():
    default, one = _setup(), _setup(languages=1)
    assert default.tokenizer.vocab == one.tokenizer.vocab
    for split in ("train", "val"):
        torch.manual_seed(0)  # the datasets draw captions from torch's RNG
        reference = list(default._loader(split, train=split == "train"))
        torch.manual_seed(0)
        batches = list(one._loader(split, train=split == "train"))
        assert len(batches) == len(reference) > 0
        assert all(_same(a, b) for a, b in zip(batches, reference, strict=True))
        assert "text_ids_k" not in batches[0]
    with pytest.raises(ValueError, match="languages"):
        ImageTextDataConfig(languages=0)


def test_word_mapping_is_consistent_and_distinct_across_languages():
    languages = SyntheticLanguages(4)
    text = "A red circle, left of a blue square; a red star."
    assert languages.translate(text, 0) == text  # language 0: the caption itself
    words = split_words(text)
    for k in range(1, 4):
        mapped = split_words(languages.translate(text, k))
        assert len(mapped) == len(words)  # word for word, same order
        table = dict(zip(words, mapped, strict=True))
        assert all(table[w] == m for w, m in zip(words, mapped, strict=True))  # consistent
        assert len(set(table.values())) == len(table)  # injective
        assert table[","] == "," and table[";"] == ";"  # punctuation shared
    tokens = [{languages.word(w, k) for w in words if w.isalnum()} for k in range(4)]
    assert all(not (tokens[i] & tokens[j]) for i in range(4) for j in range(i))
    assert languages.parallel(text)[2] == languages.translate(text, 2)
    with pytest.raises(ValueError, match="collide"):
        languages.translate_all(["a circle", "a circleq2"])


def test_vocabulary_covers_every_language_and_ids_map_consistently(multilingual):
    vocab = multilingual.tokenizer.vocab
    languages = multilingual.languages
    train_words = {
        w for t in multilingual.datasets["train"].captions.all_texts() for w in split_words(t)
    }
    for k in range(3):
        assert {languages.word(w, k) for w in train_words} <= set(vocab)
    # token ids: language 0's id -> language k's id is one function, injective, over a batch
    batch = next(iter(multilingual.val_dataloader()))
    ids, mask = batch["text_ids_k"], batch["text_mask_k"]
    assert torch.equal(mask[:, 0], mask[:, 1]) and torch.equal(mask[:, 0], mask[:, 2])
    special = len(SPECIALS)
    for k in (1, 2):
        pairs = {
            (a, b)
            for a, b in zip(
                ids[:, 0][mask[:, 0]].tolist(), ids[:, k][mask[:, k]].tolist(), strict=True
            )
        }
        forward = {a for a, _ in pairs}
        assert len(pairs) == len(forward) == len({b for _, b in pairs})
        words = [(vocab[a], vocab[b]) for a, b in pairs if a >= special]
        assert all(b == languages.word(a, k) for a, b in words)
        assert any(a != b for a, b in words)


def test_batches_are_image_major_with_language_zero_in_text_ids(multilingual):
    b = next(iter(multilingual.val_dataloader()))
    n, k, length = b["text_ids_k"].shape
    assert (n, k) == (16, 3) and b["text_mask_k"].shape == (n, k, length)
    assert b["text_mask_k"].dtype == torch.bool
    captions = multilingual.datasets["val"].captions
    for row in (0, 7, 15):
        text = captions.text(int(b["index"][row]))
        for language in range(3):
            ids, _ = multilingual.tokenizer.encode(
                [multilingual.languages.translate(text, language)]
            )
            assert torch.equal(b["text_ids_k"][row, language, : ids.shape[1]], ids[0])
        width = b["text_ids"].shape[1]  # evaluation text_ids: language 0
        assert torch.equal(b["text_ids"][row], b["text_ids_k"][row, 0, :width])
    # micro-batches keep every caption with its image
    halves = split_batch(b, 8)
    assert torch.equal(halves[1]["text_ids_k"], b["text_ids_k"][8:])


def test_training_text_ids_draw_one_language_per_sample(multilingual):
    torch.manual_seed(0)
    chosen = []
    for b in multilingual.train_dataloader():
        width = b["text_ids"].shape[1]
        for row in range(len(b["index"])):
            matches = [
                k
                for k in range(3)
                if torch.equal(b["text_ids_k"][row, k, :width], b["text_ids"][row])
                and not b["text_ids_k"][row, k, width:].any()
            ]
            assert len(matches) == 1
            chosen.append(matches[0])
    assert set(chosen) == {0, 1, 2}


def _module(vocab: list[str], cls: type = OneToK, **method) -> L.LightningModule:
    name = "one_to_k" if cls is OneToK else "clip"
    return cls(
        method={"name": name, **method},
        model=MODEL,
        optim=OPTIM,
        tokenizer=word_state(vocab),
        context={"modalities": ["image", "text"], "image_size": 24, "max_text_len": 8},
    )


@pytest.mark.parametrize("objective", ["one_to_k", "one_to_one", "k_pairs"])
def test_module_trains_and_logs_per_language_recall_and_mrv(tmp_path, objective):
    dm = _setup(languages=3, image_size=24, max_text_len=8)
    module = _module(dm.tokenizer.vocab, objective=objective)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[EmbeddingMetrics()],
    )
    keys = ("mrv", "image_to_text/mrv", "text_to_image/mrv", "mean_R1", "lang2/text_to_image/R1")
    trainer.fit(module, datamodule=dm)
    assert all(torch.isfinite(trainer.callback_metrics[f"val/languages/{k}"]) for k in keys)
    trainer.test(module, datamodule=dm)
    logged = trainer.callback_metrics
    assert all(torch.isfinite(logged[f"test/languages/{k}"]) for k in keys)
    assert logged["test/languages/mrv"] >= 0
    # the standard metrics score language 0, as the module's language 0 does (up to a caption
    # of 50 whose rank a different padding of its batch could flip)
    standard, own = (
        logged[f"test/{key}/text_to_image/R1"] for key in ("retrieval", "languages/lang0")
    )
    assert abs(standard - own) <= 100 / 50
    with torch.no_grad():  # the temperature clamp keeps tau <= max_temperature = 0.5
        module.temperature.log_scale.fill_(0.0)
    module.temperature.clamp_()
    assert module.scale.item() == pytest.approx(2.0)


def test_module_loss_with_one_language_is_clip():
    dm = _setup(image_size=24, max_text_len=8)
    batch = next(iter(dm.val_dataloader()))
    torch.manual_seed(0)
    clip = _module(dm.tokenizer.vocab, CLIP)
    ours = _module(dm.tokenizer.vocab)
    ours.load_state_dict(clip.state_dict())
    with torch.no_grad():
        ours_loss = ours.losses(batch, ours.encode(batch))["itc"]
        clip_loss = clip.losses(batch, clip.encode(batch))["clip"]
    assert torch.allclose(ours_loss, clip_loss, rtol=0, atol=1e-6)


def test_gradient_caching_gives_the_whole_batch_gradient():
    """optim.micro_batch_size: the K-language outputs keep the batch first, so the cached
    micro-batch backward equals the automatic one."""
    dm = _setup(languages=3, image_size=24, max_text_len=8)
    torch.manual_seed(0)
    batch = next(iter(dm.train_dataloader()))
    module = _module(dm.tokenizer.vocab).double().train()
    batch = {
        k: v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
        for k, v in batch.items()
    }
    assert module.encode(batch)["text_k"].pooled.shape == (8, 3, 16)
    params = [p for p in module.parameters() if p.requires_grad]
    loss = module.losses(batch, module.encode(batch))["itc"]
    expected = torch.autograd.grad(loss, params, allow_unused=True)
    cached = cached_backward(
        module.encode,
        lambda outputs: module.losses(batch, outputs)["itc"],
        params,
        batch,
        4,
        lambda surrogate, last: surrogate.backward(),
    )
    assert torch.allclose(cached, loss.detach(), rtol=0, atol=1e-12)
    for grad, param in zip(expected, params, strict=True):
        if grad is not None:
            assert torch.allclose(param.grad, grad, rtol=0, atol=1e-10)
