"""The registry of data sources (datamodules/sources): each family's formats are its registered
sources, an unknown format lists them on one line, a source registered here is a new format
of its family with no edit to the datamodule; and the K-languages collate plug-in."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import datamodules  # noqa: F401  (registers the image-text family)
from datamodules import ImageTextDataConfig, ImageTextDataModule
from datamodules.languages import ParallelLanguages, SyntheticLanguages
from datamodules.pairs import TokenizeCollate
from datamodules.sources import SOURCES, Source
from datamodules.sources.image_text import ImageTextSource, ImageTextSplit
from datamodules.storage import Captions
from modules.registry import DATAMODULES
from modules.towers.tokenizer import WordTokenizer
from tests.tiny_modules import setup_with_words

FAMILY_FORMATS = {
    "image_text": ("embedded", "jsonl", "coco", "webdataset"),
    "video_text": ("embedded", "msrvtt", "csv"),
    "audio_visual": ("embedded", "lrs"),
    "medical_report": ("embedded", "mimic_cxr", "iu_xray"),
    "shapes_views": ("embedded",),
    "shapes_sounds": ("embedded",),
    "shapes_depth_sounds": ("embedded", "vidal"),
    "shapes_sizes": ("embedded",),
    "timed_events": ("embedded", "charades_sta", "nextgqa"),
}


@pytest.mark.parametrize("family", sorted(FAMILY_FORMATS))
def test_each_familys_formats_are_its_registered_sources(family):
    config = DATAMODULES.get(family).config
    assert config.family == family
    assert config.formats() == SOURCES.formats(family) == FAMILY_FORMATS[family]
    for fmt in config.formats():
        source = SOURCES.get(family, fmt)
        assert issubclass(source, Source) and (source.family, source.format) == (family, fmt)
        assert source.needs_root == (fmt != "embedded")


@pytest.mark.parametrize("family", sorted(FAMILY_FORMATS))
def test_an_unknown_format_lists_the_registrys_formats_on_one_line(family):
    config = DATAMODULES.get(family).config
    with pytest.raises(ValueError) as raised:
        config(format="parquet", root="/data")
    message = str(raised.value)
    assert (
        message == (f"data.format must be one of {FAMILY_FORMATS[family]}, got 'parquet'")
        and "\n" not in message
    )


def test_a_source_is_registered_once():
    with pytest.raises(ValueError, match="registered twice"):
        SOURCES.register("image_text", "jsonl")(type("Again", (Source,), {}))


class InMemory(ImageTextSource):
    """Six random images with two captions each and a two-class label, made in memory."""

    needs_root = False

    def label_classes(self) -> dict[str, list[str] | None]:
        return {"label": ["even", "odd"]}

    def _split(self, split: str) -> ImageTextSplit:
        rng = np.random.default_rng(len(split))
        images = rng.integers(0, 256, (6, self.cfg.image_size, self.cfg.image_size, 3), np.uint8)
        captions = Captions.from_lists([[f"picture {i}", f"image {i}"] for i in range(6)])
        labels = {"label": np.arange(6) % 2}
        return ImageTextSplit(captions, images, labels, np.full(6, -1))


def test_a_registered_source_is_a_new_format_without_editing_the_datamodule(monkeypatch):
    monkeypatch.setattr(SOURCES, "_sources", dict(SOURCES._sources))
    SOURCES.register("image_text", "in_memory")(InMemory)
    assert ImageTextDataConfig.formats()[-1] == "in_memory"
    cfg = ImageTextDataConfig(format="in_memory", image_size=8, batch_size=4, eval_batch_size=12)
    dm = setup_with_words(ImageTextDataModule(cfg))
    assert dm.describe().startswith("image_text (in_memory at None): train 6 images / 12")
    assert dm.class_names == {"label": ["even", "odd"]}
    assert dm.class_retrieval_labels == ("label",)
    assert dm.zero_shot_tasks["label"][1][0] == "a photo of a odd."
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 8, 8) and batch["text_ids"].shape[0] == 4
    assert torch.equal(batch["label/label"], batch["item_id"] % 2)
    val = next(iter(dm.val_dataloader()))
    assert val["index"].tolist() == list(range(12)) and val["item_id"].tolist()[:3] == [0, 0, 1]
    monkeypatch.undo()
    with pytest.raises(ValueError, match="data.format must be one of"):
        ImageTextDataConfig(format="in_memory")


TEXTS = ["a red circle", "the blue square, left of a star", "one green cross"]


def _collate(train: bool, languages: int = 3) -> TokenizeCollate:
    plugin = ParallelLanguages(SyntheticLanguages(languages), train)
    words = SyntheticLanguages(languages).translate_all(TEXTS)
    return TokenizeCollate(WordTokenizer.build(words, max_len=12), [plugin])


def _samples() -> list[dict]:
    return [{"text": text, "index": i} for i, text in enumerate(TEXTS)]


def test_languages_plugin_adds_k_captions_and_keeps_language_zero_in_evaluation():
    samples = _samples()
    batch = _collate(train=False)(samples)
    assert set(batch) == {"text_ids", "text_mask", "text_ids_k", "text_mask_k", "index"}
    b, k, length = batch["text_ids_k"].shape
    assert (b, k) == (3, 3) and batch["text_mask_k"].shape == (b, k, length)
    assert batch["text_mask_k"].dtype == torch.bool
    width = batch["text_ids"].shape[1]
    assert torch.equal(batch["text_ids"], batch["text_ids_k"][:, 0, :width])
    assert not batch["text_ids_k"][:, 0, width:].any()
    assert samples == _samples()  # the plug-in leaves the dataset's samples as they were


def test_languages_plugin_draws_one_language_per_training_sample_from_torch():
    collate, chosen = _collate(train=True), []
    torch.manual_seed(0)
    for _ in range(10):
        batch = collate(_samples())
        width = batch["text_ids"].shape[1]
        for row in range(3):
            matches = [
                k
                for k in range(3)
                if torch.equal(batch["text_ids_k"][row, k, :width], batch["text_ids"][row])
                and not batch["text_ids_k"][row, k, width:].any()
            ]
            assert len(matches) == 1
            chosen.append(matches[0])
    assert set(chosen) == {0, 1, 2}
    torch.manual_seed(0)
    again = [collate(_samples())["text_ids"] for _ in range(10)]
    torch.manual_seed(0)
    assert all(torch.equal(a, collate(_samples())["text_ids"]) for a in again)


def test_one_language_adds_no_plugin_and_no_parallel_keys():
    dm = ImageTextDataModule(ImageTextDataConfig(languages=1))
    assert dm._collate_with(None, train=True).plugins == ()
    dm = ImageTextDataModule(ImageTextDataConfig(languages=2))
    (plugin,) = dm._collate_with(None, train=True).plugins
    assert isinstance(plugin, ParallelLanguages) and plugin.train
    assert not dm._collate_with(None, train=False).plugins[0].train


class _CollatedInAWorker(Dataset):
    """One item: whether the image batch :class:`TokenizeCollate` stacks lies in shared memory,
    asked in the loader worker that collates it."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> bool:
        collate = TokenizeCollate(WordTokenizer.build(TEXTS, max_len=12))
        samples = [{"image": torch.zeros(3, 4, 4), "text": t, "index": i} for t in TEXTS]
        return collate(samples)["image"].is_shared()


def test_collate_stacks_in_shared_memory_in_a_loader_worker():
    """In a worker the batch is stacked straight into shared memory, as PyTorch's
    default_collate does, rather than copied there when it is sent to the main process."""
    assert list(DataLoader(_CollatedInAWorker(), batch_size=None, num_workers=1)) == [True]
    assert not _CollatedInAWorker()[0]  # the main process: ordinary memory
