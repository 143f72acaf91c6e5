"""Bad data files: a corrupt or missing sample is replaced by the next readable one and reported
in ``batch["skipped"]``; ``SkippedSamples`` counts and logs them and stops past
``data.max_skipped_fraction``; programming errors still raise; a missing root or manifest fails
at setup with a message naming the path."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import av
import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import Logger
from PIL import Image

from callbacks.data_health import DataQualityError, SkippedSamples
from callbacks.evaluation import EmbeddingMetrics
from datamodules import ImageTextDataConfig, ImageTextDataModule
from datamodules.audio_visual import AudioVisualDataConfig, AudioVisualDataModule
from datamodules.errors import DataError, DataFileMissing
from datamodules.formats import read_jsonl, read_video_csv
from datamodules.media import MediaError
from datamodules.medical_report import MedicalReportDataConfig, MedicalReportDataModule
from datamodules.pairs import PairDataset, TokenizeCollate
from datamodules.storage import Captions
from datamodules.transforms import AugmentConfig
from datamodules.video_text import VideoTextDataConfig, VideoTextDataModule
from modules.grad_cache import split_batch
from modules.towers.tokenizer import WordTokenizer
from tests.tiny_modules import setup_with_words, tiny_module

# items of the JSONL fixture, in order: 2 is not an image, 3 is missing
FILES = ["0.png", "1.png", "bad.png", "gone.png", "4.png", "5.png", "6.png", "7.png"]
#: Every split's COCO image folder (data.format coco needs them all).
COCO_IMAGES = {f"{split}_images": "img" for split in ("train", "val", "test")}
WORDS = ["red", "green", "blue", "grey", "cyan", "pink", "teal", "gold"]


def _write_jsonl_data(root, splits=("train", "val", "test")) -> None:
    """Eight images, one caption each; ``bad.png`` holds garbage, ``gone.png`` is absent."""
    (root / "img").mkdir(parents=True)
    for k, name in enumerate(FILES):
        if name == "bad.png":
            (root / "img" / name).write_bytes(b"this is not a PNG file" * 8)
        elif name != "gone.png":
            Image.new("RGB", (20, 12), (30 * k, 255 - 30 * k, 0)).save(root / "img" / name)
    lines = [
        json.dumps({"image": n, "caption": f"a {w} picture"})
        for n, w in zip(FILES, WORDS, strict=True)
    ]
    for split in splits:
        (root / f"{split}.jsonl").write_text("\n".join(lines))


def _jsonl_config(root, **overrides) -> ImageTextDataConfig:
    return ImageTextDataConfig(
        **{
            "format": "jsonl",
            "root": str(root),
            "train_images": "img",
            "val_images": "img",
            "test_images": "img",
            "image_size": 16,
            "max_text_len": 8,
            "batch_size": 4,
            "eval_batch_size": 4,
            **overrides,
        }
    )


def _tokenizer() -> WordTokenizer:
    return WordTokenizer.build([f"a {w} picture" for w in WORDS], max_len=8)


# ------------------------------------------------------------------ dataset and collate


def test_bad_images_are_replaced_by_the_next_readable_and_reported(tmp_path):
    _write_jsonl_data(tmp_path)
    dm = ImageTextDataModule(_jsonl_config(tmp_path), tokenizer=_tokenizer())
    setup_with_words(dm, "fit")
    val = dm.datasets["val"]
    two, three, four = val[2], val[3], val[4]
    # item 2 (corrupt) and item 3 (missing) both fall through to item 4, with its caption
    for sample in (two, three):
        assert (sample["item_id"], sample["index"]) == (4, 4)
        assert torch.equal(sample["image"], four["image"]) and sample["text"] == four["text"]
    assert len(two["skipped"]) == 2 and len(three["skipped"]) == 1 and four["skipped"] == []
    assert re.search(r"bad\.png \(item 2\) could not be read", two["skipped"][0])
    assert re.search(r"gone\.png \(item 3\) not found", two["skipped"][1])
    assert three["skipped"] == two["skipped"][1:]

    batches = list(dm.val_dataloader())
    assert [len(b["index"]) for b in batches] == [4, 4]
    assert batches[0]["item_id"].tolist() == [0, 1, 4, 4] and batches[0]["image"].shape[0] == 4
    assert len(batches[0]["skipped"]) == 3 and batches[1]["skipped"] == []
    # gradient caching shares non-tensor values with every micro-batch
    assert all(m["skipped"] is batches[0]["skipped"] for m in split_batch(batches[0], 2))
    # training: full batches, each bad file reported once per epoch wherever it is drawn
    train = list(dm.train_dataloader())
    assert [len(b["index"]) for b in train] == [4, 4]
    reasons = [r for b in train for r in b["skipped"]]
    assert len(reasons) == 3 and sum("bad.png" in r for r in reasons) == 1


def _fake_dataset(load, items: int = 4) -> PairDataset:
    return PairDataset(Captions.from_lists([[f"caption {i}"] for i in range(items)]), load)


def test_replacement_wraps_around_and_gives_up_after_bounded_attempts(monkeypatch):
    def load(item: int) -> dict:
        if item in bad:
            raise MediaError(f"file{item}.png: broken")
        return {"x": torch.tensor([float(item)])}

    bad = {3}
    sample = _fake_dataset(load)[3]
    assert sample["item_id"] == 0 and sample["skipped"] == ["file3.png: broken"]
    batch = TokenizeCollate(WordTokenizer.build(["caption"], max_len=4))(
        [_fake_dataset(load)[k] for k in range(4)]
    )
    assert batch["skipped"] == ["file3.png: broken"] and batch["x"].shape == (4, 1)
    bad = {0, 1, 2, 3}
    with pytest.raises(MediaError, match="file1.png") as caught:  # the requested item's error
        _fake_dataset(load)[1]
    assert caught.value.__notes__ == ["none of 4 items from item 1 on loaded"]
    monkeypatch.setattr(PairDataset, "max_attempts", 2)
    with pytest.raises(MediaError, match="file0.png") as caught:
        _fake_dataset(load, items=10)[0]
    assert caught.value.__notes__ == ["none of 2 items from item 0 on loaded"]


@pytest.mark.parametrize("error", [KeyError, TypeError, ValueError, RuntimeError])
def test_programming_errors_are_not_swallowed(error):
    def load(item: int) -> dict:
        raise error("a bug, not a bad file")

    with pytest.raises(error, match="a bug"):
        _fake_dataset(load)[0]


def test_a_bad_augmentation_config_still_raises(tmp_path):
    _write_jsonl_data(tmp_path, splits=("val",))
    steps = [{"name": "Resize", "height": 8, "width": 8}]  # changes the shape: a config error
    cfg = _jsonl_config(tmp_path, augment=AugmentConfig(eval=steps))
    dm = ImageTextDataModule(cfg, tokenizer=_tokenizer())
    setup_with_words(dm, "validate")
    with pytest.raises(ValueError, match="augmentation changed the image shape"):
        dm.datasets["val"][0]


def _write_mp4(path, levels=(0, 80, 160, 240), size=32) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for level in levels:
            frame = np.full((size, size, 3), level, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_corrupt_video_is_skipped(tmp_path):
    _write_mp4(tmp_path / "a.mp4")
    _write_mp4(tmp_path / "b.mp4", levels=(240, 160, 80, 0))
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    (tmp_path / "val.csv").write_text("video,caption\na,a man cooks\nbroken,a dog\nb,a dog runs\n")
    cfg = VideoTextDataConfig(
        format="csv", root=str(tmp_path), num_frames=2, frame_size=16, eval_batch_size=3
    )
    dm = VideoTextDataModule(cfg, tokenizer=WordTokenizer.build(["a man cooks dog runs"]))
    setup_with_words(dm, "validate")
    (batch,) = list(dm.val_dataloader())
    assert batch["video"].shape == (3, 2, 3, 16, 16) and batch["item_id"].tolist() == [0, 2, 2]
    assert torch.equal(batch["video"][1], batch["video"][2])
    assert batch["video_reversed"].shape == batch["video"].shape
    (reason,) = batch["skipped"]
    assert "broken.mp4 could not be decoded" in reason


# ------------------------------------------------------------------ the callback


class _Strategy:
    """Two ranks that each saw what this one saw: the sum doubles every count."""

    def reduce(self, tensor: torch.Tensor, reduce_op: str) -> torch.Tensor:
        assert reduce_op == "sum"
        return tensor * 2


class _Module:
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.logged: list[tuple[str, float, dict]] = []

    def log(self, name: str, value: float, **kwargs) -> None:
        self.logged.append((name, value, kwargs))


def _trainer(limit: float | None, sanity: bool = False) -> SimpleNamespace:
    cfg = SimpleNamespace() if limit is None else SimpleNamespace(max_skipped_fraction=limit)
    return SimpleNamespace(
        sanity_checking=sanity,
        strategy=_Strategy(),
        datamodule=SimpleNamespace(cfg=cfg),
        world_size=1,
    )


def _batch(size: int, bad: int) -> dict:
    return {"index": torch.arange(size), "skipped": [f"f{k}.png: broken" for k in range(bad)]}


def test_callback_counts_reduced_values_logs_and_stops_past_the_threshold():
    callback, module = SkippedSamples(), _Module()
    trainer = _trainer(limit=0.2)
    callback.on_validation_batch_end(_trainer(0.2, sanity=True), module, None, _batch(4, 4), 0)
    assert callback.seen["val"] == 0 and module.logged == []  # sanity checks are not counted
    callback.on_train_batch_end(trainer, module, None, _batch(4, 0), 0)
    assert module.logged == []  # nothing skipped yet: no flat zero curve
    callback.on_train_batch_end(trainer, module, None, _batch(4, 1), 1)  # 2 of 16: under 20%
    callback.on_validation_batch_end(trainer, module, None, _batch(4, 0), 0)
    callback.on_train_epoch_end(trainer, module)
    callback.on_validation_epoch_end(trainer, module)
    assert callback.seen == {"train": 16, "val": 8, "test": 0}
    assert callback.skipped == {"train": 2, "val": 0, "test": 0}
    assert callback.examples["train"] == ["f0.png: broken"]
    assert [value for _, value, _ in module.logged] == [2.0, 2.0]  # all stages so far
    assert {name for name, _, _ in module.logged} == {"data/skipped"}
    assert module.logged[0][2] == {"on_step": True, "on_epoch": False}  # the train batch
    assert module.logged[1][2] == {"on_step": False, "on_epoch": True, "reduce_fx": "max"}
    with pytest.raises(DataQualityError, match="4 of 16 val samples"):  # 25% > 20%
        callback.on_validation_batch_end(trainer, module, None, _batch(4, 2), 1)


def test_callback_threshold_error_message_and_waiting_rule():
    callback, module = SkippedSamples(), _Module()
    trainer = _trainer(limit=0.1)  # checked per batch from 10 samples on, and at epoch end
    callback.on_train_batch_end(trainer, module, None, _batch(4, 1), 0)  # 2 of 8: waits
    with pytest.raises(DataQualityError) as caught:
        callback.on_train_batch_end(trainer, module, None, _batch(4, 0), 1)  # 2 of 16 > 10%
    message = str(caught.value)
    assert "2 of 16 train samples failed to load" in message
    assert "data.max_skipped_fraction = 0.1" in message and "f0.png: broken" in message
    assert isinstance(caught.value, RuntimeError)

    callback = SkippedSamples()  # default threshold (1%) without one in the config
    callback.on_test_batch_end(_trainer(None), module, None, _batch(4, 1), 0)  # 2 of 8: waits
    with pytest.raises(DataQualityError, match=r"2 of 8 test samples .* = 0\.01 allows"):
        callback.on_test_epoch_end(_trainer(None), module)
    callback = SkippedSamples()  # at most three files are named
    with pytest.raises(DataQualityError) as caught:
        callback.on_train_batch_end(_trainer(0.0), module, None, _batch(5, 5), 0)
    assert re.findall(r"f\d\.png", str(caught.value)) == ["f0.png", "f1.png", "f2.png"]


def test_callback_state_survives_a_checkpoint():
    callback = SkippedSamples()
    callback.on_train_batch_end(_trainer(1.0), _Module(), None, _batch(4, 1), 0)
    restored = SkippedSamples()
    restored.load_state_dict(callback.state_dict())
    assert restored.seen["train"] == 8 and restored.skipped["train"] == 2
    assert restored.examples["train"] == ["f0.png: broken"]


class _Recorder(Logger):
    """Keeps every logged metric dict."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[dict[str, float]] = []

    name, version = "recorder", 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.append(dict(metrics))

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


def _lightning(callbacks: list, logger: Logger | bool = False, **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        log_every_n_steps=1,
        **kwargs,
    )


def test_training_and_evaluation_run_through_bad_files(tmp_path):
    _write_jsonl_data(tmp_path)
    dm = ImageTextDataModule(_jsonl_config(tmp_path, max_skipped_fraction=0.8))
    setup_with_words(dm, "fit")
    module = tiny_module(dm.tokenizer.vocab)
    callback, recorder = SkippedSamples(), _Recorder()
    trainer = _lightning([callback, EmbeddingMetrics()], recorder, max_epochs=2)
    trainer.fit(module, datamodule=dm)
    (tested,) = trainer.test(module, datamodule=dm, verbose=False)
    # per epoch 3 failed loads in 8 samples (bad.png once, gone.png twice: for itself and
    # again while replacing bad.png), in every stage
    assert callback.seen == {"train": 16, "val": 16, "test": 8}
    assert callback.skipped == {"train": 6, "val": 6, "test": 3}
    logged = [m["data/skipped"] for m in recorder.metrics if "data/skipped" in m]
    assert logged == sorted(logged) and logged[-1] == 15.0 and len(logged) >= 4
    assert tested["data/skipped"] == 15.0 and "test/retrieval/mean_R1" in tested


def test_evaluation_past_the_threshold_raises_naming_a_bad_file(tmp_path):
    _write_jsonl_data(tmp_path, splits=("train", "val"))
    dm = ImageTextDataModule(_jsonl_config(tmp_path, max_skipped_fraction=0.1))
    setup_with_words(dm, "validate")
    trainer = _lightning([SkippedSamples()])
    with pytest.raises(DataQualityError) as caught:
        trainer.validate(tiny_module(dm.tokenizer.vocab), datamodule=dm, verbose=False)
    message = str(caught.value)
    assert "3 of 8 val samples failed to load" in message and "max_skipped_fraction" in message
    assert re.search(r"img/bad\.png \(item 2\) could not be read", message)


# ------------------------------------------------------------------ missing root or manifest


def test_image_text_missing_root_and_manifest_fail_at_setup(tmp_path):
    cases = [
        (_jsonl_config(tmp_path / "nowhere"), f"data root {tmp_path / 'nowhere'} not found"),
        (_jsonl_config(tmp_path), f"JSONL manifest {tmp_path / 'val.jsonl'} not found"),
        (
            ImageTextDataConfig(format="coco", root=str(tmp_path), **COCO_IMAGES),
            f"COCO annotation file {tmp_path / 'annotations' / 'captions_val.json'} not found",
        ),
    ]
    for cfg, message in cases:
        with pytest.raises(DataFileMissing, match=f"^{re.escape(message)}$"):
            ImageTextDataModule(cfg, tokenizer=_tokenizer()).setup("validate")


@pytest.mark.parametrize(
    ("module", "cfg", "missing"),
    [
        (VideoTextDataModule, VideoTextDataConfig, {"format": "msrvtt"}),
        (VideoTextDataModule, VideoTextDataConfig, {"format": "csv"}),
        (AudioVisualDataModule, AudioVisualDataConfig, {"format": "lrs"}),
        (MedicalReportDataModule, MedicalReportDataConfig, {"format": "mimic_cxr"}),
        (MedicalReportDataModule, MedicalReportDataConfig, {"format": "iu_xray"}),
    ],
)
def test_other_formats_name_a_missing_root_or_manifest(tmp_path, module, cfg, missing):
    manifests = {
        "msrvtt": "MSR-VTT annotation file {}/msrvtt.json not found",
        "csv": "CSV manifest {}/val.csv not found",
        "lrs": "LRS list file {}/train.txt not found",
        "mimic_cxr": "MIMIC-CXR metadata {}/mimic-cxr-2.0.0-metadata.csv not found",
        "iu_xray": "IU-Xray annotation file {}/annotation.json not found",
    }
    gone = re.escape(f"data root {tmp_path / 'gone'} not found")
    with pytest.raises(DataFileMissing, match=f"^{gone}$"):
        module(cfg(root=str(tmp_path / "gone"), **missing), tokenizer=_tokenizer()).setup("test")
    expected = re.escape(manifests[missing["format"]].format(tmp_path))
    with pytest.raises(DataFileMissing, match=rf"^{expected}$"):
        module(cfg(root=str(tmp_path), **missing), tokenizer=_tokenizer()).setup("validate")


def test_bad_data_files_are_data_errors(tmp_path):
    """run.py reports a DataError as one line (``data error: ...``, exit 2): a malformed
    manifest line, a missing file and an unreadable media file are all of them (the readers'
    messages: tests/test_video_text_data.py); a missing file is still a FileNotFoundError
    (skipped at read time like any bad file)."""
    assert issubclass(MediaError, DataError) and issubclass(DataFileMissing, FileNotFoundError)


def test_csv_manifest_may_start_with_a_utf8_bom(tmp_path):
    """A byte order mark (spreadsheet exports) is not part of the first column's name."""
    (tmp_path / "clip").mkdir()
    manifest = tmp_path / "val.csv"
    manifest.write_bytes(b"\xef\xbb\xbfvideo,caption\nclip,a clip\n")
    files = read_video_csv(manifest, tmp_path)
    assert files.path(0) == str(tmp_path / "clip") and files.captions.all_texts() == ["a clip"]


def test_max_skipped_fraction_is_validated():
    for cfg in (ImageTextDataConfig, VideoTextDataConfig, AudioVisualDataConfig):
        with pytest.raises(ValueError, match="data.max_skipped_fraction"):
            cfg(max_skipped_fraction=1.5)
    with pytest.raises(ValueError, match="data.max_skipped_fraction"):
        MedicalReportDataConfig(max_skipped_fraction=-0.1)


def test_a_manifest_that_is_not_utf8_is_a_data_error_naming_it(tmp_path):
    """Latin-1 bytes in a JSONL manifest: a DataError with the file, not a UnicodeDecodeError."""
    manifest = tmp_path / "train.jsonl"
    manifest.write_bytes('{"image": "a.png", "captions": ["caf\u00e9"]}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=rf"{re.escape(str(manifest))}: not UTF-8 text"):
        read_jsonl(manifest, tmp_path)
